import { screen } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LiveKitVoiceChat } from '../../src/components/LiveKitVoiceChat';
import { installFakeFetch, jsonResponse } from '../doubles/fetch';
import { renderWithSettings } from '../render';

afterEach(() => vi.unstubAllGlobals());

describe('LiveKitVoiceChat', () => {
  it('says how to configure LiveKit when the server has it off', async () => {
    installFakeFetch({
      '/v1/livekit/status': () =>
        jsonResponse({ configured: false, url: null, room_name: 'gemma-voice-room', agent_name: 'gemma' }),
    });
    renderWithSettings(<LiveKitVoiceChat />);
    expect(
      await screen.findByText(
        'LiveKit is not configured on the server: set LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET.',
      ),
    ).toBeInTheDocument();
    expect(screen.queryByRole('button', { name: 'Start conversation' })).not.toBeInTheDocument();
  });

  it('treats a 503 from the status route the same way', async () => {
    installFakeFetch({
      '/v1/livekit/status': () =>
        jsonResponse({ error: { code: 'livekit_not_configured', message: 'LiveKit is not configured' } }, 503),
    });
    renderWithSettings(<LiveKitVoiceChat />);
    expect(await screen.findByTestId('livekit-not-configured')).toBeInTheDocument();
  });

  it('offers to start a conversation when configured, and shows API errors readably', async () => {
    installFakeFetch({
      '/v1/livekit/status': () =>
        jsonResponse({ configured: true, url: 'ws://lk.test:7880', room_name: 'gemma-voice-room', agent_name: 'gemma' }),
    });
    renderWithSettings(<LiveKitVoiceChat />);
    expect(await screen.findByRole('button', { name: 'Start conversation' })).toBeEnabled();
    expect(screen.getByText('ws://lk.test:7880')).toBeInTheDocument();
  });

  it('shows the message of a failed status call', async () => {
    installFakeFetch({
      '/v1/livekit/status': () => jsonResponse({ error: { code: 'unauthorized', message: 'Invalid API key' } }, 401),
    });
    renderWithSettings(<LiveKitVoiceChat />);
    expect(await screen.findByRole('alert')).toHaveTextContent('Invalid API key');
  });
});
