import { screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { VoiceChatPanel } from '../../src/components/VoiceChatPanel';
import { installFakeFetch, jsonResponse } from '../doubles/fetch';
import { renderWithSettings } from '../render';

beforeEach(() => {
  installFakeFetch({ '/v1/livekit/status': () => jsonResponse({ configured: false }) });
});
afterEach(() => vi.unstubAllGlobals());

describe('VoiceChatPanel', () => {
  it('switches between the WebSocket and LiveKit components', async () => {
    const user = userEvent.setup();
    renderWithSettings(<VoiceChatPanel />);
    const ws = screen.getByRole('radio', { name: 'WebSocket' });
    const lk = screen.getByRole('radio', { name: 'LiveKit' });
    expect(ws).toHaveAttribute('aria-checked', 'true');
    expect(screen.getByRole('button', { name: 'Connect' })).toBeInTheDocument();

    await user.click(lk);
    expect(lk).toHaveAttribute('aria-checked', 'true');
    expect(await screen.findByTestId('livekit-not-configured')).toBeInTheDocument();
    expect(screen.queryByRole('button', { name: 'Connect' })).not.toBeInTheDocument();
    expect(window.localStorage.getItem('gemmavoice.voiceMode')).toBe('livekit');

    await user.click(ws);
    expect(screen.getByRole('button', { name: 'Connect' })).toBeInTheDocument();
    expect(screen.queryByTestId('livekit-not-configured')).not.toBeInTheDocument();
  });

  it('moves between the modes with the arrow keys', async () => {
    const user = userEvent.setup();
    renderWithSettings(<VoiceChatPanel />);
    await user.click(screen.getByRole('radio', { name: 'WebSocket' }));
    await user.keyboard('{ArrowRight}');
    const lk = screen.getByRole('radio', { name: 'LiveKit' });
    expect(lk).toHaveAttribute('aria-checked', 'true');
    expect(lk).toHaveFocus();
    expect(await screen.findByTestId('livekit-not-configured')).toBeInTheDocument();
    await user.keyboard('{ArrowDown}'); // wraps round
    expect(screen.getByRole('radio', { name: 'WebSocket' })).toHaveAttribute('aria-checked', 'true');
    // The turn-taking choice inside the WebSocket mode works the same way, and Tab leaves each group.
    await user.tab();
    expect(screen.getByRole('radio', { name: 'Hands-free' })).toHaveFocus();
    await user.keyboard('{ArrowLeft}');
    expect(screen.getByRole('radio', { name: 'Push-to-talk' })).toHaveAttribute('aria-checked', 'true');
    expect(screen.getByRole('radio', { name: 'Push-to-talk' })).toHaveFocus();
  });
});
