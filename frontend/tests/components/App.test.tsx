import { screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { App } from '../../src/App';
import { installFakeFetch } from '../doubles/fetch';
import { renderWithSettings } from '../render';

beforeEach(() => {
  installFakeFetch({ '/health/ready': () => new Response('{}', { status: 200 }) });
});
afterEach(() => vi.unstubAllGlobals());

describe('App', () => {
  it('renders every tab and shows its panel when chosen', async () => {
    const user = userEvent.setup();
    renderWithSettings(<App />);
    const tabs = within(screen.getByRole('tablist')).getAllByRole('tab');
    expect(tabs.map((t) => t.textContent)).toEqual([
      'Text generation',
      'Speech-to-text',
      'Text-to-speech',
      'Voice chat',
    ]);

    const expected: [string, string][] = [
      ['Text generation', 'Text generation'],
      ['Speech-to-text', 'Speech-to-text'],
      ['Text-to-speech', 'Text-to-speech'],
      ['Voice chat', 'Voice chat'],
    ];
    for (const [tab, heading] of expected) {
      await user.click(screen.getByRole('tab', { name: tab }));
      expect(screen.getByRole('tab', { name: tab })).toHaveAttribute('aria-selected', 'true');
      const panel = screen.getByRole('tabpanel');
      expect(within(panel).getByRole('heading', { level: 2, name: heading })).toBeInTheDocument();
      expect(window.location.hash).toBe(`#${screen.getByRole('tab', { name: tab }).id.replace('tab-', '')}`);
    }
  });

  it('moves between tabs with the arrow keys, Home and End; only the selected tab is in the Tab order', async () => {
    const user = userEvent.setup();
    renderWithSettings(<App />);
    const tab = (name: string) => screen.getByRole('tab', { name });
    await user.click(tab('Text generation'));
    expect(tab('Text generation')).toHaveAttribute('tabindex', '0');
    expect(tab('Speech-to-text')).toHaveAttribute('tabindex', '-1');

    await user.keyboard('{ArrowRight}');
    expect(tab('Speech-to-text')).toHaveAttribute('aria-selected', 'true');
    expect(tab('Speech-to-text')).toHaveFocus();
    expect(within(screen.getByRole('tabpanel')).getByRole('heading', { level: 2 })).toHaveTextContent('Speech-to-text');
    await user.keyboard('{End}');
    expect(tab('Voice chat')).toHaveFocus();
    await user.keyboard('{ArrowRight}'); // wraps round
    expect(tab('Text generation')).toHaveAttribute('aria-selected', 'true');
    await user.keyboard('{ArrowLeft}');
    expect(tab('Voice chat')).toHaveFocus();
    await user.keyboard('{Home}');
    expect(tab('Text generation')).toHaveFocus();
    expect(window.location.hash).toBe('#generate');
  });

  it('shows the server readiness from /health/ready', async () => {
    renderWithSettings(<App />);
    expect(await screen.findByText('Server ready')).toBeInTheDocument();
  });
});
