import {
  BarVisualizer,
  RoomAudioRenderer,
  RoomContext,
  StartAudio,
  useLocalParticipant,
  useTranscriptions,
  useVoiceAssistant,
} from '@livekit/components-react';
import { Room, RoomEvent } from 'livekit-client';
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { describeError } from '../api/errors';
import type { LiveKitStatus } from '../api/types';
import { ChatTranscript, type TranscriptEntry } from './ChatTranscript';
import { ErrorMessage } from './ErrorMessage';
import { useApiClient } from './SettingsContext';

type Phase =
  | { kind: 'loading' }
  | { kind: 'unavailable'; message: string }
  | { kind: 'not-configured' }
  | { kind: 'idle'; status: LiveKitStatus }
  | { kind: 'connecting'; status: LiveKitStatus }
  | { kind: 'connected'; status: LiveKitStatus; room: Room; roomName: string };

export const NOT_CONFIGURED_MESSAGE =
  'LiveKit is not configured on the server: set LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET.';

/** Voice chat through a LiveKit room, where the GemmaVoice agent worker joins the user. */
export function LiveKitVoiceChat() {
  const client = useApiClient();
  const [phase, setPhase] = useState<Phase>({ kind: 'loading' });
  const [error, setError] = useState<string | null>(null);
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
    async (status: LiveKitStatus) => {
      setError(null);
      setPhase({ kind: 'connecting', status });
      const room = new Room({ adaptiveStream: true, dynacast: true });
      roomRef.current = room;
      try {
        const token = await client.liveKitToken({});
        const url = token.url || status.url;
        if (!url) throw new Error('The server gave no LiveKit URL.');
        // Start the microphone while connecting: with the pre-connect buffer, what the user says
        // before the agent has joined is kept and handed to the agent when it arrives.
        await Promise.all([
          room.localParticipant.setMicrophoneEnabled(true, undefined, { preConnectBuffer: true }),
          room.connect(url, token.token).catch((err: unknown) => {
            throw new Error(`Cannot reach the LiveKit server at ${url}: ${describeError(err)}`);
          }),
        ]);
        room.once(RoomEvent.Disconnected, () => setPhase({ kind: 'idle', status }));
        setPhase({ kind: 'connected', status, room, roomName: token.room_name });
      } catch (err) {
        await room.disconnect();
        setError(describeError(err));
        setPhase({ kind: 'idle', status });
      }
    },
    [client],
  );

  switch (phase.kind) {
    case 'loading':
      return <p className="muted">Checking LiveKit on the server…</p>;
    case 'not-configured':
      return (
        <div className="notice" role="status" data-testid="livekit-not-configured">
          <p>{NOT_CONFIGURED_MESSAGE}</p>
          <p className="muted small">
            Voice chat over WebSocket works without LiveKit. Start a LiveKit server and the agent worker
            (<code>python -m app.agents.worker dev</code>) to use this mode.
          </p>
        </div>
      );
    case 'unavailable':
      return <ErrorMessage title="Cannot check LiveKit" message={phase.message} />;
    case 'idle':
    case 'connecting':
      return (
        <div className="stack">
          <p className="muted">
            Room <code>{phase.status.room_name ?? 'new room'}</code>
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
          <div className="actions">
            <button type="button" disabled={phase.kind === 'connecting'} onClick={() => void connect(phase.status)}>
              {phase.kind === 'connecting' ? 'Connecting…' : 'Start conversation'}
            </button>
          </div>
        </div>
      );
    case 'connected':
      return (
        <RoomContext.Provider value={phase.room}>
          <LiveKitSession roomName={phase.roomName} onDisconnect={() => void phase.room.disconnect()} />
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

function LiveKitSession({ roomName, onDisconnect }: { roomName: string; onDisconnect: () => void }) {
  const { state, audioTrack } = useVoiceAssistant();
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
      <BarVisualizer state={state} track={audioTrack} barCount={7} className="agent-visualizer" />
      <ChatTranscript entries={entries} emptyText="Say something: the agent's replies and the transcript show up here." />
    </div>
  );
}
