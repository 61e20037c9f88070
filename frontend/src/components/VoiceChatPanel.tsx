import { lazy, Suspense, useState } from 'react';
import { RadioGroup, type RadioOption } from './RadioGroup';
import { WebSocketVoiceChat } from './WebSocketVoiceChat';

// livekit-client is most of the bundle: load it only when LiveKit mode is chosen.
const LiveKitVoiceChat = lazy(() => import('./LiveKitVoiceChat').then((m) => ({ default: m.LiveKitVoiceChat })));

export type ConnectionMode = 'websocket' | 'livekit';

const MODE_STORAGE_KEY = 'gemmavoice.voiceMode';

const MODES: RadioOption<ConnectionMode>[] = [
  { value: 'websocket', label: 'WebSocket' },
  { value: 'livekit', label: 'LiveKit' },
];

function initialMode(): ConnectionMode {
  try {
    return window.localStorage.getItem(MODE_STORAGE_KEY) === 'livekit' ? 'livekit' : 'websocket';
  } catch {
    return 'websocket';
  }
}

/** Voice chat over the API's own WebSocket, or through a LiveKit room with the agent worker. */
export function VoiceChatPanel() {
  const [mode, setMode] = useState<ConnectionMode>(initialMode);

  const choose = (next: ConnectionMode) => {
    setMode(next);
    try {
      window.localStorage.setItem(MODE_STORAGE_KEY, next);
    } catch {
      // Storage may be unavailable (private mode): the choice just isn't remembered.
    }
  };

  return (
    <section className="card" aria-labelledby="voice-title">
      <div className="card-header">
        <h2 id="voice-title">Voice chat</h2>
        <RadioGroup className="segmented" label="Connection mode" options={MODES} value={mode} onChange={choose} />
      </div>
      {mode === 'websocket' ? (
        <WebSocketVoiceChat />
      ) : (
        <Suspense fallback={<p className="muted">Loading LiveKit…</p>}>
          <LiveKitVoiceChat />
        </Suspense>
      )}
    </section>
  );
}
