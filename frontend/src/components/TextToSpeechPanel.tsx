import { useEffect, useState, type FormEvent } from 'react';
import { useBusyTask } from '../hooks/useBusyTask';
import { ErrorMessage } from './ErrorMessage';
import { useApiClient } from './SettingsContext';

/** Synthesizes speech with POST /v1/text-to-speech and plays it. */
export function TextToSpeechPanel() {
  const client = useApiClient();
  const [text, setText] = useState('Hello! I am GemmaVoice, your self-hosted voice assistant.');
  const [voice, setVoice] = useState('');
  const [audio, setAudio] = useState<{ url: string; size: number; ms: number } | null>(null);
  const { busy, error, setError, run } = useBusyTask();

  useEffect(() => () => {
    if (audio) URL.revokeObjectURL(audio.url);
  }, [audio]);

  const synthesize = async (event: FormEvent) => {
    event.preventDefault();
    if (!text.trim()) return;
    await run(async (signal) => {
      const started = performance.now();
      const blob = await client.textToSpeech({ text, voice: voice.trim() || undefined, format: 'wav' }, signal);
      setAudio({ url: URL.createObjectURL(blob), size: blob.size, ms: performance.now() - started });
    });
  };

  return (
    <section className="card" aria-labelledby="tts-title">
      <h2 id="tts-title">Text-to-speech</h2>
      <form onSubmit={synthesize} className="stack">
        <label className="field">
          <span>Text</span>
          <textarea name="text" rows={4} value={text} onChange={(e) => setText(e.target.value)} />
        </label>
        <label className="field narrow">
          <span>Voice</span>
          <input value={voice} onChange={(e) => setVoice(e.target.value)} placeholder="server default" />
        </label>
        <div className="actions">
          <button type="submit" disabled={busy || !text.trim()}>
            {busy ? 'Synthesizing…' : 'Speak'}
          </button>
        </div>
      </form>
      <ErrorMessage message={error} onDismiss={() => setError(null)} />
      {audio && (
        <div className="preview">
          <audio controls autoPlay src={audio.url} data-testid="tts-audio" />
          <div className="actions">
            <a className="button secondary" href={audio.url} download="speech.wav">
              Download WAV
            </a>
            <span className="muted small">
              {(audio.size / 1024).toFixed(1)} KiB · synthesized in {(audio.ms / 1000).toFixed(2)} s
            </span>
          </div>
        </div>
      )}
    </section>
  );
}
