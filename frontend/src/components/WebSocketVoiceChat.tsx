import { useState, type FormEvent, type KeyboardEvent } from 'react';
import { errorTitle } from '../api/errors';
import { DEFAULT_AUDIO_PROCESSING, type AudioProcessing } from '../audio/microphone';
import { useVoiceChat, type TurnMode } from '../hooks/useVoiceChat';
import type { AgentState } from '../hooks/voiceChatState';
import { ChatTranscript } from './ChatTranscript';
import { ErrorMessage } from './ErrorMessage';
import { LevelMeter } from './LevelMeter';
import { RadioGroup, type RadioOption } from './RadioGroup';
import { useApiClient } from './SettingsContext';

const STATE_LABELS: Record<AgentState, string> = {
  idle: 'Not connected',
  listening: 'Listening',
  thinking: 'Thinking',
  speaking: 'Speaking',
};

const TURN_MODES: RadioOption<TurnMode>[] = [
  { value: 'vad', label: 'Hands-free' },
  { value: 'push-to-talk', label: 'Push-to-talk' },
];

const ACRONYMS = new Set(['stt', 'llm', 'tts', 'vad']);

/** `llm_first_token_ms` -> `LLM first token`. */
function metricLabel(key: string): string {
  const words = key.replace(/_ms$/, '').split('_');
  return words
    .map((word, i) => (ACRONYMS.has(word) ? word.toUpperCase() : i === 0 ? word[0].toUpperCase() + word.slice(1) : word))
    .join(' ');
}

/** Real-time voice chat over WS /v1/conversation/ws. */
export function WebSocketVoiceChat() {
  const client = useApiClient();
  const chat = useVoiceChat(client);
  const { state, stats } = chat;
  const [turnMode, setTurnMode] = useState<TurnMode>('vad');
  const [instructions, setInstructions] = useState('');
  const [voice, setVoice] = useState('');
  const [processing, setProcessing] = useState<AudioProcessing>(DEFAULT_AUDIO_PROCESSING);
  const [draft, setDraft] = useState('');

  const connected = state.connection === 'ready';
  const busy = state.connection === 'connecting';
  const active = connected || busy;

  const submitText = (event: FormEvent) => {
    event.preventDefault();
    chat.sendText(draft);
    setDraft('');
  };

  const pttKey = (event: KeyboardEvent, down: boolean) => {
    if (event.key !== ' ' && event.key !== 'Enter') return;
    event.preventDefault();
    if (down && !event.repeat) chat.startTalking();
    if (!down) chat.stopTalking();
  };

  const metrics = state.metrics;

  return (
    <div className="voice-chat">
      <div className="toolbar">
        <RadioGroup
          className="segmented small"
          label="Turn taking"
          options={TURN_MODES}
          value={turnMode}
          onChange={setTurnMode}
          disabled={active}
        />
        <span
          className={`state-pill state-${state.agent}${state.userSpeaking ? ' user-speaking' : ''}`}
          data-testid="agent-state"
          data-state={state.agent}
        >
          <span className="dot" aria-hidden="true" />
          {busy ? 'Connecting…' : STATE_LABELS[state.agent]}
          {connected && state.userSpeaking && ' · hearing you'}
        </span>
        <LevelMeter level={connected ? chat.level : 0} />
        <div className="spacer" />
        {active ? (
          <button type="button" className="secondary" onClick={chat.disconnect}>
            Disconnect
          </button>
        ) : (
          <button type="button" onClick={() => void chat.connect({ turnMode, instructions, voice, audioProcessing: processing })}>
            Connect
          </button>
        )}
      </div>

      {!active && (
        <details className="session-options">
          <summary>Session options</summary>
          <div className="grid-2">
            <label className="field">
              <span>Instructions</span>
              <textarea
                rows={2}
                value={instructions}
                onChange={(e) => setInstructions(e.target.value)}
                placeholder="server default, e.g. “You are a concise assistant.”"
              />
            </label>
            <label className="field">
              <span>Voice</span>
              <input value={voice} onChange={(e) => setVoice(e.target.value)} placeholder="server default" />
            </label>
          </div>
          <div className="checks">
            <label>
              <input
                type="checkbox"
                checked={processing.echoCancellation}
                onChange={(e) => setProcessing({ ...processing, echoCancellation: e.target.checked })}
              />
              Echo cancellation <span className="muted">(keep on with speakers)</span>
            </label>
            <label>
              <input
                type="checkbox"
                checked={processing.noiseSuppression}
                onChange={(e) => setProcessing({ ...processing, noiseSuppression: e.target.checked })}
              />
              Noise suppression <span className="muted">(off can help recognition with a headset)</span>
            </label>
          </div>
        </details>
      )}

      {state.errors.map((error) => (
        <ErrorMessage
          key={error.id}
          title={errorTitle(error.code)}
          message={error.message}
          onDismiss={() => chat.dismissError(error.id)}
        />
      ))}

      <ChatTranscript
        entries={state.items}
        emptyText={
          connected
            ? turnMode === 'vad'
              ? 'Speak: your words and the reply show up here.'
              : 'Hold the talk button while you speak, or type below.'
            : 'Connect, allow the microphone, and start talking.'
        }
      />

      <div className="controls">
        {turnMode === 'push-to-talk' && (
          <button
            type="button"
            className={`talk${chat.talking ? ' pressed' : ''}`}
            disabled={!connected}
            onPointerDown={chat.startTalking}
            onPointerUp={chat.stopTalking}
            onPointerLeave={chat.stopTalking}
            onKeyDown={(e) => pttKey(e, true)}
            onKeyUp={(e) => pttKey(e, false)}
          >
            {chat.talking ? 'Release to send' : 'Hold to talk'}
          </button>
        )}
        <button
          type="button"
          className="secondary"
          disabled={!connected || (state.agent !== 'speaking' && state.agent !== 'thinking')}
          onClick={chat.interrupt}
        >
          Interrupt
        </button>
        <form className="input-row grow" onSubmit={submitText}>
          <input
            aria-label="Message"
            placeholder={connected ? 'Type a message…' : 'Connect to type a message'}
            value={draft}
            disabled={!connected}
            onChange={(e) => setDraft(e.target.value)}
          />
          <button type="submit" disabled={!connected || !draft.trim()}>
            Send
          </button>
        </form>
      </div>

      <dl className="stats">
        <div>
          <dt>Voice-to-voice</dt>
          <dd data-testid="metric-voice-to-voice">
            {typeof metrics?.voice_to_voice_ms === 'number' ? `${Math.round(metrics.voice_to_voice_ms)} ms` : '–'}
          </dd>
        </div>
        {metrics &&
          Object.entries(metrics)
            .filter(([key, value]) => key !== 'voice_to_voice_ms' && key.endsWith('_ms') && typeof value === 'number')
            .slice(0, 6)
            .map(([key, value]) => (
              <div key={key}>
                <dt>{metricLabel(key)}</dt>
                <dd>{Math.round(value as number)} ms</dd>
              </div>
            ))}
        <div>
          <dt>Reply audio</dt>
          <dd>
            <span data-testid="audio-bytes-received">{stats.bytesReceived}</span> B ·{' '}
            <span data-testid="audio-played-ms">{stats.playedMs}</span> ms played
          </dd>
        </div>
        <div>
          <dt>Mic sent</dt>
          <dd data-testid="audio-bytes-sent">{stats.bytesSent} B</dd>
        </div>
      </dl>
    </div>
  );
}
