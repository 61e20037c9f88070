import { act, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { ConnectionState, DisconnectReason, Room, RoomEvent } from 'livekit-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LiveKitVoiceChat } from '../../src/components/LiveKitVoiceChat';
import { installFakeFetch, jsonResponse } from '../doubles/fetch';
import type { RecordingRoom, recordingRoomClass } from '../doubles/RecordingRoom';
import { renderWithSettings } from '../render';

// The component's Room is the RecordingRoom test double; everything else is the real livekit-client.
vi.mock('livekit-client', async (importOriginal) => {
  const real = await importOriginal<typeof import('livekit-client')>();
  const { recordingRoomClass } = await import('../doubles/RecordingRoom');
  return { ...real, Room: recordingRoomClass(real) };
});
const RecordingRooms = Room as unknown as ReturnType<typeof recordingRoomClass>;

beforeEach(() => RecordingRooms.reset());
afterEach(() => vi.unstubAllGlobals());

const STATUS_URL = 'ws://status.lk.test:7880';
const TOKEN_URL = 'wss://token.lk.test';
const TOKEN = 'jwt-the-api-gave';

/** A configured server whose token route answers (the contract's fields); returns the fetch double. */
function configuredServer() {
  return installFakeFetch({
    '/v1/livekit/status': () =>
      jsonResponse({ configured: true, url: STATUS_URL, room_name: 'gemma-voice-room', agent_name: 'gemma' }),
    '/v1/livekit/token': () =>
      jsonResponse({
        token: TOKEN,
        url: TOKEN_URL,
        room_name: 'gemma-voice-room-4f2a',
        participant_identity: 'user-4f2a',
        expires_at: 1_900_000_000,
      }),
  });
}

/** Renders the component, clicks Start conversation, and returns the room it made, still connecting. */
async function startConversation(): Promise<{ room: RecordingRoom; view: ReturnType<typeof renderWithSettings> }> {
  const view = renderWithSettings(<LiveKitVoiceChat />);
  await userEvent.click(await screen.findByRole('button', { name: 'Start conversation' }));
  await vi.waitFor(() => expect(RecordingRooms.instances[0]?.callsOf('connect')).toHaveLength(1));
  expect(RecordingRooms.instances).toHaveLength(1);
  return { room: RecordingRooms.instances[0], view };
}

/** Lets the room's connect() resolve and waits for the conversation's toolbar. */
async function finishConnecting(room: RecordingRoom) {
  await act(async () => room.finishConnecting());
  await screen.findByRole('button', { name: 'Disconnect' });
}

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

  it("gives livekit-client's room the pre-connect buffer where the microphone reads it", async () => {
    const fetch = configuredServer();
    const { room } = await startConversation();

    expect(room.constructedWith?.publishDefaults?.preConnectBuffer).toBe(true);
    // The microphone opens while the room is still connecting, and livekit-client buffers what it hears.
    expect(screen.getByRole('button', { name: 'Connecting…' })).toBeDisabled();
    expect(room.callsOf('setMicrophoneEnabled')).toEqual([
      expect.objectContaining({ enabled: true, startsPreConnectBuffer: true }),
    ]);
    // The room is joined at the URL and with the token the API returned (not the status route's URL).
    expect(room.callsOf('connect')).toEqual([{ method: 'connect', url: TOKEN_URL, token: TOKEN }]);
    const tokenCall = fetch.mock.calls.find(([input]) => String(input).endsWith('/v1/livekit/token'));
    expect(tokenCall?.[1]?.method).toBe('POST');
    expect(JSON.parse(String(tokenCall?.[1]?.body))).toEqual({}); // no room name: a fresh room each time

    await finishConnecting(room);
    expect(screen.getByText('gemma-voice-room-4f2a')).toBeInTheDocument();
    expect(room.callsOf('disconnect')).toEqual([]);
  });

  it('leaves the room on Disconnect and offers a new conversation', async () => {
    configuredServer();
    const { room } = await startConversation();
    await finishConnecting(room);

    await userEvent.click(screen.getByRole('button', { name: 'Disconnect' }));
    expect(room.callsOf('disconnect')).toHaveLength(1);
    expect(await screen.findByRole('button', { name: 'Start conversation' })).toBeEnabled();
  });

  it('says so when the server ends the connection, and rejoins the same room on request', async () => {
    const fetch = configuredServer();
    const { room } = await startConversation();
    await finishConnecting(room);

    // The LiveKit node went away: the SDK could not resume, and the room ended for this page.
    await act(async () => {
      room.state = ConnectionState.Disconnected;
      room.emit(RoomEvent.Disconnected, DisconnectReason.SERVER_SHUTDOWN);
    });
    expect(await screen.findByTestId('livekit-connection-lost')).toHaveTextContent(/remembers the conversation/);
    await userEvent.click(screen.getByRole('button', { name: 'Rejoin the conversation' }));
    await vi.waitFor(() => expect(RecordingRooms.instances).toHaveLength(2));
    const tokenCalls = fetch.mock.calls.filter(([input]) => String(input).endsWith('/v1/livekit/token'));
    expect(JSON.parse(String(tokenCalls.at(-1)?.[1]?.body))).toEqual({ room_name: 'gemma-voice-room-4f2a' });
  });

  it('shows that the connection is being resumed while the SDK reconnects', async () => {
    configuredServer();
    const { room } = await startConversation();
    await finishConnecting(room);
    expect(screen.queryByTestId('livekit-reconnecting')).not.toBeInTheDocument();

    await act(async () => {
      room.state = ConnectionState.Reconnecting;
      room.emit(RoomEvent.ConnectionStateChanged, ConnectionState.Reconnecting);
    });
    expect(await screen.findByTestId('livekit-reconnecting')).toHaveTextContent(/reconnecting/);
    await act(async () => {
      room.state = ConnectionState.Connected;
      room.emit(RoomEvent.ConnectionStateChanged, ConnectionState.Connected);
    });
    await vi.waitFor(() => expect(screen.queryByTestId('livekit-reconnecting')).not.toBeInTheDocument());
  });

  it('leaves the room when the page leaves LiveKit mode', async () => {
    configuredServer();
    const { room, view } = await startConversation();
    await finishConnecting(room);

    view.unmount();
    expect(room.callsOf('disconnect')).toHaveLength(1);
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
