import { screen } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Room } from 'livekit-client';
import { LiveKitVoiceChat, PRE_CONNECT_ROOM_OPTIONS } from '../../src/components/LiveKitVoiceChat';
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

  it('says where to get a LiveKit server when there is none', async () => {
    installFakeFetch({
      '/v1/livekit/status': () =>
        jsonResponse({ configured: false, url: null, room_name: 'gemma-voice-room', agent_name: 'gemma' }),
    });
    renderWithSettings(<LiveKitVoiceChat />);
    const notice = await screen.findByTestId('livekit-not-configured');
    expect(notice).toHaveTextContent('make livekit-server');
    expect(notice).toHaveTextContent('LIVEKIT_SERVER_BIN');
    expect(notice).toHaveTextContent('restart make run');
    expect(notice).toHaveTextContent('livekit/livekit-server Docker image');
    expect(notice).toHaveTextContent('LiveKit Cloud');
  });

  it("gives livekit-client's room the pre-connect buffer where the microphone reads it", () => {
    // LocalParticipant.setTrackEnabled merges the room's publishDefaults with the capture options
    // and starts the buffer when the merge has preConnectBuffer (livekit-client 2.21).
    const room = new Room({ adaptiveStream: true, ...PRE_CONNECT_ROOM_OPTIONS });
    expect(room.options.publishDefaults?.preConnectBuffer).toBe(true);
    expect(new Room().options.publishDefaults?.preConnectBuffer).toBe(false); // the library's default
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
    // Each conversation gets a fresh room under the configured prefix: that is what the page announces.
    expect(screen.getByTestId('livekit-next-room')).toHaveTextContent('A new room of your own (gemma-voice-room-…)');
  });

  it('shows the message of a failed status call', async () => {
    installFakeFetch({
      '/v1/livekit/status': () => jsonResponse({ error: { code: 'unauthorized', message: 'Invalid API key' } }, 401),
    });
    renderWithSettings(<LiveKitVoiceChat />);
    expect(await screen.findByRole('alert')).toHaveTextContent('Invalid API key');
  });
});
