import {
  BarVisualizer,
  RoomAudioRenderer,
  RoomContext,
  StartAudio,
  useConnectionState,
  useLocalParticipant,
  useTranscriptions,
  useVoiceAssistant,
} from '@livekit/components-react';
import { ConnectionState, DisconnectReason, Room, RoomEvent } from 'livekit-client';
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { describeError } from '../api/errors';
import type { LiveKitStatus } from '../api/types';
import { AGENT_JOIN_TIMEOUT_MS, useAgentArrival } from '../hooks/agentArrival';
import { ChatTranscript, type TranscriptEntry } from './ChatTranscript';
import { ErrorMessage } from './ErrorMessage';
import { useApiClient } from './SettingsContext';

type Phase =
  | { kind: 'loading' }
  | { kind: 'unavailable'; message: string }
  | { kind: 'not-configured' }
  | { kind: 'idle'; status: LiveKitStatus; agentMissing?: string; lost?: { roomName: string; message: string } }
  | { kind: 'connecting'; status: LiveKitStatus }
  | { kind: 'connected'; status: LiveKitStatus; room: Room; roomName: string };

export const NOT_CONFIGURED_MESSAGE =
  'LiveKit is not configured on the server: set LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET.';

/**
 * What livekit-client 2.21 needs to record the microphone while the room connects and hand that
 * audio to the agent when it joins (the "pre-connect buffer"). It reads the flag from the room's
 * publish defaults merged with the second argument of setMicrophoneEnabled, so it is set here, on
 * the room, and not as the third argument (the publish options), where it is ignored.
 */
const PRE_CONNECT_ROOM_OPTIONS = { publishDefaults: { preConnectBuffer: true } } as const;

/** Voice chat through a LiveKit room, where the GemmaVoice agent worker joins the user. */
export function LiveKitVoiceChat({ agentTimeoutMs = AGENT_JOIN_TIMEOUT_MS }: { agentTimeoutMs?: number } = {}) {
  const client = useApiClient();
  const [phase, setPhase] = useState<Phase>({ kind: 'loading' });
  const [error, setError] = useState<string | null>(null);
  // The last conversation's transcript stays on screen after Disconnect, until a new one starts.
  const [lastTranscript, setLastTranscript] = useState<TranscriptEntry[]>([]);
  const roomRef = useRef<Room | null>(null);

  // Leaving LiveKit mode (or the page) leaves the room.
  useEffect(() => () => void roomRef.current?.disconnect(), []);

  useEffect(() => {
    const controller = new AbortController();
    setPhase({ kind: 'loading' });
    client
      .liveKitStatus(controller.signal)
      .then((status) => setPhase(status.configured ? { kind: 'idle', status } : { kind: 'not-configured' }))
      .catch((err: unknown) => {
        if (controller.signal.aborted) return;
        // The token route answers 503 when LiveKit is off; a status route may do the same.
        const status = (err as { status?: number }).status;
        setPhase(
          status === 503 ? { kind: 'not-configured' } : { kind: 'unavailable', message: describeError(err) },
        );
      });
    return () => controller.abort();
  }, [client]);

  const connect = useCallback(
    async (status: LiveKitStatus, roomName?: string) => {
      setError(null);
      setLastTranscript([]);
      setPhase({ kind: 'connecting', status });
      const room = new Room({ adaptiveStream: true, dynacast: true, ...PRE_CONNECT_ROOM_OPTIONS });
      roomRef.current = room;
      try {
        // No room name: a fresh room, and with it a new dispatch of the agent. A room name: back into the room
        // whose connection was lost, where the agent goes on from the conversation so far.
        const token = await client.liveKitToken(roomName ? { room_name: roomName } : {});
        const url = token.url || status.url;
        if (!url) throw new Error('The server gave no LiveKit URL.');
        // Start the microphone while connecting: with the pre-connect buffer, what the user says
        // before the agent has joined is kept and handed to the agent when it arrives.
        await Promise.all([
          room.localParticipant.setMicrophoneEnabled(true),
          room.connect(url, token.token).catch((err: unknown) => {
            throw new Error(`Cannot reach the LiveKit server at ${url}: ${describeError(err)}`);
          }),
        ]);
        // (A room left because the agent never came is already idle, with the reason: keep it.) A room the
        // server ended (it restarted, or the connection could not be resumed) can be rejoined by its name.
        room.once(RoomEvent.Disconnected, (reason?: DisconnectReason) =>
          setPhase((current) => {
            if (current.kind === 'idle') return current;
            if (reason === undefined || reason === DisconnectReason.CLIENT_INITIATED) return { kind: 'idle', status };
            const lost = {
              roomName: token.room_name,
              message:
                'The connection to the LiveKit server was lost and could not be resumed. Rejoin to carry on: ' +
                'the assistant remembers the conversation.',
            };
            return { kind: 'idle', status, lost };
          }),
        );
        setPhase({ kind: 'connected', status, room, roomName: token.room_name });
      } catch (err) {
        await room.disconnect();
        setError(describeError(err));
        setPhase({ kind: 'idle', status });
      }
    },
    [client],
  );

  // The agent failed or never came: leave the room and say so; the button then starts a new room.
  const agentMissing = useCallback(async (room: Room, status: LiveKitStatus, message: string) => {
    await room.disconnect();
    setError(null);
    setPhase({ kind: 'idle', status, agentMissing: message });
  }, []);

  switch (phase.kind) {
    case 'loading':
      return <p className="muted">Checking LiveKit on the server…</p>;
    case 'not-configured':
      return (
        <div className="notice" role="status" data-testid="livekit-not-configured">
          <p>{NOT_CONFIGURED_MESSAGE}</p>
          <p className="muted small">
            Voice chat over WebSocket works without LiveKit. On this machine, the quickest way is{' '}
            <code>make livekit-server</code>: it builds a pinned <code>livekit-server</code> release with Go (1.25 or
            newer) into <code>.build/bin/</code>. Then restart <code>make run</code>: it starts that server on this
            machine with keys of its own, and the agent with it (a <code>livekit-server</code> on PATH or at{' '}
            <code>LIVEKIT_SERVER_BIN</code> works too). Or run the <code>livekit/livekit-server</code> Docker image (
            <code>docker compose up</code>), or use LiveKit Cloud, and set the three settings above.
          </p>
        </div>
      );
    case 'unavailable':
      return <ErrorMessage title="Cannot check LiveKit" message={phase.message} />;
    case 'idle':
    case 'connecting':
      return (
        <div className="stack">
          <p className="muted" data-testid="livekit-next-room">
            A new room of your own (<code>{phase.status.room_name ? `${phase.status.room_name}-…` : 'new room'}</code>)
            {phase.status.agent_name && (
              <>
                {' '}
                with agent <code>{phase.status.agent_name}</code>
              </>
            )}
            {phase.status.url && (
              <>
                {' '}
                on <code>{phase.status.url}</code>
              </>
            )}
          </p>
          <ErrorMessage message={error} onDismiss={() => setError(null)} />
          {phase.kind === 'idle' && phase.agentMissing && (
            <div data-testid="livekit-agent-missing">
              <ErrorMessage title="No agent" message={phase.agentMissing} />
            </div>
          )}
          {phase.kind === 'idle' && phase.lost && (
            <div data-testid="livekit-connection-lost">
              <ErrorMessage title="Connection lost" message={phase.lost.message} />
            </div>
          )}
          {lastTranscript.length > 0 && <ChatTranscript entries={lastTranscript} emptyText="" />}
          <div className="actions">
            {phase.kind === 'idle' && phase.lost && (
              <button type="button" onClick={() => void connect(phase.status, phase.lost?.roomName)}>
                Rejoin the conversation
              </button>
            )}
            <button type="button" disabled={phase.kind === 'connecting'} onClick={() => void connect(phase.status)}>
              {phase.kind === 'connecting'
                ? 'Connecting…'
                : phase.kind === 'idle' && phase.agentMissing
                  ? 'Try again in a new room'
                  : 'Start conversation'}
            </button>
          </div>
        </div>
      );
    case 'connected':
      return (
        <RoomContext.Provider value={phase.room}>
          <LiveKitSession
            roomName={phase.roomName}
            agentTimeoutMs={agentTimeoutMs}
            onDisconnect={() => void phase.room.disconnect()}
            onTranscript={setLastTranscript}
            onAgentMissing={(message) => void agentMissing(phase.room, phase.status, message)}
          />
          <RoomAudioRenderer />
        </RoomContext.Provider>
      );
  }
}

const AGENT_STATE_LABELS: Record<string, string> = {
  disconnected: 'Disconnected',
  connecting: 'Waiting for the agent…',
  'pre-connect-buffering': 'Waiting for the agent (your speech is buffered)…',
  initializing: 'Agent starting…',
  listening: 'Listening',
  thinking: 'Thinking',
  speaking: 'Speaking',
  idle: 'Idle',
  failed: 'Agent failed',
};

interface LiveKitSessionProps {
  roomName: string;
  agentTimeoutMs: number;
  onDisconnect: () => void;
  onAgentMissing: (message: string) => void;
  /** The transcript so far, for the page to keep showing once the room is left. */
  onTranscript: (entries: TranscriptEntry[]) => void;
}

function LiveKitSession({ roomName, agentTimeoutMs, onDisconnect, onAgentMissing, onTranscript }: LiveKitSessionProps) {
  const { state, audioTrack } = useVoiceAssistant();
  const { problem: missing, reconnecting } = useAgentArrival(state, agentTimeoutMs);
  const connection = useConnectionState();
  const reported = useRef(false);
  useEffect(() => {
    if (missing && !reported.current) {
      reported.current = true;
      onAgentMissing(missing);
    }
  }, [missing, onAgentMissing]);
  const { localParticipant, isMicrophoneEnabled } = useLocalParticipant();
  const transcriptions = useTranscriptions();

  const entries = useMemo<TranscriptEntry[]>(
    () =>
      transcriptions.map((t) => ({
        id: t.streamInfo.id,
        role: t.participantInfo.identity === localParticipant.identity ? 'user' : 'assistant',
        text: t.text,
        final: t.streamInfo.attributes?.['lk.transcription_final'] !== 'false',
      })),
    [transcriptions, localParticipant.identity],
  );
  useEffect(() => {
    if (entries.length) onTranscript(entries);
  }, [entries, onTranscript]);

  return (
    <div className="voice-chat">
      <div className="toolbar">
        <span className={`state-pill state-${state}`} data-testid="livekit-agent-state" data-state={state}>
          <span className="dot" aria-hidden="true" />
          {AGENT_STATE_LABELS[state] ?? state}
        </span>
        <span className="muted small">
          Room <code>{roomName}</code>
        </span>
        <div className="spacer" />
        <StartAudio label="Allow audio playback" className="secondary" />
        <button
          type="button"
          className="secondary"
          onClick={() => void localParticipant.setMicrophoneEnabled(!isMicrophoneEnabled)}
        >
          {isMicrophoneEnabled ? 'Mute' : 'Unmute'}
        </button>
        <button type="button" className="secondary" onClick={onDisconnect}>
          Disconnect
        </button>
      </div>
      {connection === ConnectionState.Reconnecting ? (
        <p className="notice" role="status" data-testid="livekit-reconnecting">
          The connection to the LiveKit server was interrupted: reconnecting…
        </p>
      ) : (
        reconnecting && (
          <p className="notice" role="status" data-testid="livekit-agent-reconnecting">
            The assistant is reconnecting… It keeps the conversation so far.
          </p>
        )
      )}
      <BarVisualizer state={state} track={audioTrack} barCount={7} className="agent-visualizer" />
      <ChatTranscript entries={entries} emptyText="Say something: the agent's replies and the transcript show up here." />
    </div>
  );
}
