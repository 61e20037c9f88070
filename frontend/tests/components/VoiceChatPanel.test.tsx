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
});
