import { act, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { WebSocketVoiceChat } from '../../src/components/WebSocketVoiceChat';
import { SETTINGS_STORAGE_KEY } from '../../src/api/settings';
import { FakeAudioContext } from '../doubles/FakeAudioContext';
import { FakeWebSocket } from '../doubles/FakeWebSocket';
import { renderWithSettings } from '../render';

/** Microphone test double: the test pushes PCM chunks through the callbacks it was given. */
const fakeMicrophone = vi.hoisted(() => ({
  instances: [] as {
    onChunk: (pcm: ArrayBuffer) => void;
    onLevel?: (l: number) => void;
    processing: unknown;
    stopped: boolean;
  }[],
  /** The rate the next microphone captures at (a browser that cannot capture at 16 kHz: another). */
  rate: 16000,
}));

vi.mock('../../src/audio/microphone', () => ({
  CAPTURE_SAMPLE_RATE: 16000,
  CAPTURE_CHUNK_MS: 20,
  DEFAULT_AUDIO_PROCESSING: { echoCancellation: true, noiseSuppression: true },
  MicrophoneCapture: class {
    stopped = false;
    sampleRate = 16000;
    onChunk: (pcm: ArrayBuffer) => void;
    onLevel?: (l: number) => void;
    processing: unknown;
    constructor(
      _context: unknown,
      callbacks: { onChunk: (pcm: ArrayBuffer) => void; onLevel?: (l: number) => void },
      processing: unknown,
    ) {
      this.onChunk = callbacks.onChunk;
      this.onLevel = callbacks.onLevel;
      this.processing = processing;
      fakeMicrophone.instances.push(this);
    }
    async start() {
      this.sampleRate = fakeMicrophone.rate;
    }
    stop() {
      this.stopped = true;
    }
  },
}));

beforeEach(() => {
  FakeWebSocket.reset();
  FakeAudioContext.instances = [];
  fakeMicrophone.instances = [];
  fakeMicrophone.rate = 16000;
  vi.stubGlobal('WebSocket', FakeWebSocket);
  vi.stubGlobal('AudioContext', FakeAudioContext);
  vi.stubGlobal('fetch', vi.fn(async () => new Response('{}')));
});
afterEach(() => vi.unstubAllGlobals());

const pcm = (samples: number) => new Int16Array(samples).fill(500).buffer;

async function connectReady(user: ReturnType<typeof userEvent.setup>) {
  await user.click(screen.getByRole('button', { name: 'Connect' }));
  const socket = FakeWebSocket.last;
  act(() => socket.serverOpen());
  act(() => socket.serverSend({ type: 'ready', session_id: 's1', input_sample_rate: 16000, output_sample_rate: 24000 }));
  await vi.waitFor(() => expect(fakeMicrophone.instances).toHaveLength(1));
  return socket;
}

describe('WebSocketVoiceChat', () => {
  it('opens the socket with the key, sends the config first and streams the microphone', async () => {
    window.localStorage.setItem(SETTINGS_STORAGE_KEY, JSON.stringify({ apiBaseUrl: '', apiKey: 'k 1' }));
    const user = userEvent.setup();
    renderWithSettings(<WebSocketVoiceChat />);
    const socket = await connectReady(user);

    // The key travels as a subprotocol ("k 1" is no token, so base64url), never in the URL.
    expect(socket.url).toBe('ws://localhost:3000/v1/conversation/ws');
    expect(socket.protocols).toEqual(['gemmavoice', 'apikey-b64.ayAx']);
    expect(socket.binaryType).toBe('arraybuffer');
    expect(socket.sentJson[0]).toEqual({ type: 'config', input_sample_rate: 16000, vad: true });
    expect(screen.getByTestId('agent-state')).toHaveAttribute('data-state', 'listening');

    expect(fakeMicrophone.instances[0].processing).toEqual({ echoCancellation: true, noiseSuppression: true });
    act(() => fakeMicrophone.instances[0].onChunk(pcm(320)));
    expect(socket.sentBinary).toHaveLength(1);
    expect(socket.sentBinary[0].byteLength).toBe(640);
  });

  it('passes the session options to the server and the microphone', async () => {
    const user = userEvent.setup();
    renderWithSettings(<WebSocketVoiceChat />);
    await user.click(screen.getByText('Session options'));
    await user.type(screen.getByLabelText('Instructions'), 'Answer in one sentence.');
    await user.click(screen.getByRole('checkbox', { name: /Noise suppression/ }));
    const socket = await connectReady(user);
    expect(socket.sentJson[0]).toEqual({
      type: 'config',
      input_sample_rate: 16000,
      vad: true,
      instructions: 'Answer in one sentence.',
    });
    expect(fakeMicrophone.instances[0].processing).toEqual({ echoCancellation: true, noiseSuppression: false });
  });

  it('shows transcripts, streamed reply text, audio counters, metrics and errors', async () => {
    const user = userEvent.setup();
    renderWithSettings(<WebSocketVoiceChat />);
    const socket = await connectReady(user);
    const context = FakeAudioContext.instances[0];

    act(() => socket.serverSend({ type: 'vad', state: 'speech_start' }));
    expect(screen.getByTestId('agent-state')).toHaveTextContent('hearing you');
    act(() => socket.serverSend({ type: 'transcript', role: 'user', text: 'What is the', final: false }));
    act(() => socket.serverSend({ type: 'transcript', role: 'user', text: 'What is the capital of France?', final: true }));
    const users = screen.getAllByTestId('transcript-user');
    expect(users).toHaveLength(1);
    expect(users[0]).toHaveTextContent('What is the capital of France?');
    expect(users[0]).toHaveAttribute('data-final', 'true');
    expect(screen.getByTestId('agent-state')).toHaveAttribute('data-state', 'thinking');

    act(() => socket.serverSend({ type: 'text', role: 'assistant', delta: 'Paris is' }));
    act(() => socket.serverSend({ type: 'text', role: 'assistant', delta: ' the capital.' }));
    act(() => socket.serverSendBinary(pcm(2400)));
    act(() => socket.serverSendBinary(pcm(2400)));
    expect(screen.getByTestId('agent-state')).toHaveAttribute('data-state', 'speaking');
    expect(context.started).toHaveLength(2);
    act(() => socket.serverSend({ type: 'response_end' }));
    act(() => socket.serverSend({ type: 'metrics', voice_to_voice_ms: 812.4, stt_ms: 300, turn: 1 }));

    const replies = screen.getAllByTestId('assistant-message');
    expect(replies).toHaveLength(1);
    expect(replies[0]).toHaveTextContent('Paris is the capital.');
    expect(screen.getByTestId('metric-voice-to-voice')).toHaveTextContent('812 ms');
    expect(screen.getByText('STT')).toBeInTheDocument();
    expect(screen.getByText('300 ms')).toBeInTheDocument();

    // Counters are published on a timer; let the played audio finish meanwhile.
    act(() => context.advance(0.3));
    await vi.waitFor(() => expect(screen.getByTestId('audio-bytes-received')).toHaveTextContent('9600'));
    await vi.waitFor(() => expect(Number(screen.getByTestId('audio-played-ms').textContent)).toBe(200));
    expect(screen.getByTestId('agent-state')).toHaveAttribute('data-state', 'listening');

    act(() => socket.serverSend({ type: 'error', code: 'bad_frame', message: 'Unknown message type' }));
    expect(screen.getByRole('alert')).toHaveTextContent('Unknown message type');
  });

  it('stops queued audio at once on interrupted, and sends interrupt from the button', async () => {
    const user = userEvent.setup();
    renderWithSettings(<WebSocketVoiceChat />);
    const socket = await connectReady(user);
    const context = FakeAudioContext.instances[0];

    act(() => socket.serverSend({ type: 'text', role: 'assistant', delta: 'A long answer' }));
    act(() => socket.serverSendBinary(pcm(24000)));
    act(() => socket.serverSendBinary(pcm(24000)));
    act(() => socket.serverSend({ type: 'interrupted' }));
    expect(context.started.every((s) => s.stopped)).toBe(true);
    expect(screen.getByTestId('agent-state')).toHaveAttribute('data-state', 'listening');
    expect(screen.getByTestId('assistant-message')).toHaveTextContent('interrupted');

    act(() => socket.serverSend({ type: 'text', role: 'assistant', delta: 'Another' }));
    act(() => socket.serverSendBinary(pcm(24000)));
    await user.click(screen.getByRole('button', { name: 'Interrupt' }));
    expect(socket.sentJson.at(-1)).toEqual({ type: 'interrupt' });
    expect(context.started.every((s) => s.stopped)).toBe(true);
    expect(screen.getAllByTestId('assistant-message')).toHaveLength(2);
  });

  it('holds reply audio while the server has it paused, and plays it on when resumed', async () => {
    const user = userEvent.setup();
    renderWithSettings(<WebSocketVoiceChat />);
    const socket = await connectReady(user);
    const context = FakeAudioContext.instances[0];

    act(() => socket.serverSendBinary(pcm(24000)));
    act(() => socket.serverSend({ type: 'playback', state: 'paused' }));
    expect(context.started).toHaveLength(1);
    expect(context.started[0].stopped).toBe(true);
    act(() => socket.serverSendBinary(pcm(24000))); // more of the reply, held too
    expect(context.started).toHaveLength(1);
    act(() => socket.serverSend({ type: 'playback', state: 'resumed' }));
    expect(context.started.slice(1).map((s) => s.stopped)).toEqual([false, false]);
  });

  it('sends typed turns and shows them once even if the server echoes them', async () => {
    const user = userEvent.setup();
    renderWithSettings(<WebSocketVoiceChat />);
    const socket = await connectReady(user);

    await user.type(screen.getByRole('textbox', { name: 'Message' }), 'Hello there{Enter}');
    expect(socket.sentJson.at(-1)).toEqual({ type: 'text', text: 'Hello there' });
    act(() => socket.serverSend({ type: 'transcript', role: 'user', text: 'Hello there', final: true }));
    expect(screen.getAllByTestId('transcript-user')).toHaveLength(1);
    expect(screen.getByTestId('agent-state')).toHaveAttribute('data-state', 'thinking');
  });

  it('push-to-talk: config vad:false, audio only while held, end_turn on release', async () => {
    const user = userEvent.setup();
    renderWithSettings(<WebSocketVoiceChat />);
    await user.click(screen.getByRole('radio', { name: 'Push-to-talk' }));
    const socket = await connectReady(user);
    expect(socket.sentJson[0]).toMatchObject({ type: 'config', vad: false });
    expect(screen.getByRole('radio', { name: 'Hands-free' })).toBeDisabled();

    const mic = fakeMicrophone.instances[0];
    act(() => mic.onChunk(pcm(320)));
    expect(socket.sentBinary).toHaveLength(0);

    const talk = screen.getByRole('button', { name: 'Hold to talk' });
    await user.pointer({ keys: '[MouseLeft>]', target: talk });
    act(() => mic.onChunk(pcm(320)));
    expect(socket.sentBinary).toHaveLength(1);
    await user.pointer({ keys: '[/MouseLeft]', target: talk });
    expect(socket.sentJson.at(-1)).toEqual({ type: 'end_turn' });
    act(() => mic.onChunk(pcm(320)));
    expect(socket.sentBinary).toHaveLength(1);
  });

  it('tells the server the rate the microphone was captured at when it could not be 16 kHz', async () => {
    fakeMicrophone.rate = 44100;
    const user = userEvent.setup();
    renderWithSettings(<WebSocketVoiceChat />);
    await user.click(screen.getByText('Session options'));
    await user.type(screen.getByLabelText('Instructions'), 'Be brief.');
    const socket = await connectReady(user);
    await vi.waitFor(() => expect(socket.sentJson).toHaveLength(2));
    // A config replaces the whole session config: every option is sent again.
    expect(socket.sentJson[1]).toEqual({ type: 'config', input_sample_rate: 44100, vad: true, instructions: 'Be brief.' });
  });

  it('titles errors in words, not codes', async () => {
    const user = userEvent.setup();
    renderWithSettings(<WebSocketVoiceChat />);
    const socket = await connectReady(user);
    act(() => socket.serverSend({ type: 'error', code: 'unsupported_audio_format', message: 'send WAV or WebM' }));
    act(() => socket.serverSend({ type: 'error', code: 'some_new_code', message: 'details' }));
    const [known, unknown] = screen.getAllByRole('alert');
    expect(known).toHaveTextContent(/^Audio format not supported: send WAV or WebM/);
    expect(unknown).toHaveTextContent(/^Some new code: details/);
    expect(screen.queryByText(/unsupported_audio_format/)).not.toBeInTheDocument();
  });

  it('reports a refused connection readably and cleans up', async () => {
    const user = userEvent.setup();
    renderWithSettings(<WebSocketVoiceChat />);
    await user.click(screen.getByRole('button', { name: 'Connect' }));
    act(() => FakeWebSocket.last.serverClose(1008, 'Invalid API key'));
    const alert = screen.getByRole('alert');
    expect(alert).toHaveTextContent('Invalid API key');
    expect(within(alert).getByText(/Could not open the voice session/)).toBeInTheDocument();
    expect(screen.getByRole('button', { name: 'Connect' })).toBeEnabled();
    expect(FakeAudioContext.instances[0].state).toBe('closed');
  });

  it('disconnect closes the socket and releases the microphone, and keeps the conversation on screen', async () => {
    const user = userEvent.setup();
    renderWithSettings(<WebSocketVoiceChat />);
    const socket = await connectReady(user);
    act(() => socket.serverSend({ type: 'transcript', role: 'user', text: 'Hello there', final: true }));
    act(() => socket.serverSend({ type: 'text', role: 'assistant', delta: 'Hi, how can I help?' }));
    await user.click(screen.getByRole('button', { name: 'Disconnect' }));
    const conversation = screen.getByRole('list', { name: 'Conversation' });
    expect(within(conversation).getByText('Hello there')).toBeInTheDocument();
    expect(within(conversation).getByText('Hi, how can I help?')).toBeInTheDocument();
    expect(socket.readyState).toBe(FakeWebSocket.CLOSED);
    expect(fakeMicrophone.instances[0].stopped).toBe(true);
    expect(screen.queryByRole('alert')).not.toBeInTheDocument();
    expect(screen.getByTestId('agent-state')).toHaveAttribute('data-state', 'idle');
  });
});
