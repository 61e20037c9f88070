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

  it('shows the server readiness from /health/ready', async () => {
    renderWithSettings(<App />);
    expect(await screen.findByText('Server ready')).toBeInTheDocument();
  });
});
