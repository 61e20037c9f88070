import { useEffect, useRef, useState, type FormEvent } from 'react';
import { describeError } from '../api/errors';
import type { TranscriptionResult } from '../api/types';
import { useBusyTask } from '../hooks/useBusyTask';
import { ErrorMessage } from './ErrorMessage';
import { useApiClient } from './SettingsContext';

const LANGUAGES: [string, string][] = [
  ['', 'Detect automatically'],
  ['en', 'English'],
  ['de', 'German'],
  ['es', 'Spanish'],
  ['fr', 'French'],
  ['it', 'Italian'],
  ['ja', 'Japanese'],
  ['nl', 'Dutch'],
  ['pt', 'Portuguese'],
  ['zh', 'Chinese'],
];

/** Transcribes an uploaded file or a recording with POST /v1/speech-to-text. */
export function SpeechToTextPanel() {
  const client = useApiClient();
  const [audio, setAudio] = useState<File | null>(null);
  const [previewUrl, setPreviewUrl] = useState<string | null>(null);
  const [language, setLanguage] = useState('');
  const [result, setResult] = useState<TranscriptionResult | null>(null);
  const [recording, setRecording] = useState(false);
  const { busy, error, setError, run } = useBusyTask();
  const recorderRef = useRef<MediaRecorder | null>(null);
  const fileInputRef = useRef<HTMLInputElement>(null);

  useEffect(() => {
    if (!audio) return;
    const url = URL.createObjectURL(audio);
    setPreviewUrl(url);
    return () => URL.revokeObjectURL(url);
  }, [audio]);

  useEffect(() => () => recorderRef.current?.stream.getTracks().forEach((t) => t.stop()), []);

  const startRecording = async () => {
    setError(null);
    if (typeof MediaRecorder === 'undefined' || !navigator.mediaDevices?.getUserMedia) {
      setError('Recording is not available in this browser (it needs https or localhost).');
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const recorder = new MediaRecorder(stream);
      const chunks: Blob[] = [];
      recorder.ondataavailable = (e) => {
        if (e.data.size > 0) chunks.push(e.data);
      };
      recorder.onstop = () => {
        stream.getTracks().forEach((t) => t.stop());
        const type = recorder.mimeType || 'audio/webm';
        const extension = type.includes('ogg') ? 'ogg' : type.includes('mp4') ? 'm4a' : 'webm';
        setAudio(new File(chunks, `recording.${extension}`, { type }));
        if (fileInputRef.current) fileInputRef.current.value = '';
        setRecording(false);
      };
      recorderRef.current = recorder;
      recorder.start();
      setRecording(true);
    } catch (err) {
      setError(`Microphone unavailable: ${describeError(err)}`);
    }
  };

  const stopRecording = () => {
    recorderRef.current?.stop();
    recorderRef.current = null;
  };

  const transcribe = async (event: FormEvent) => {
    event.preventDefault();
    if (!audio) return;
    setResult(null);
    await run(async (signal) => {
      setResult(await client.speechToText({ file: audio, filename: audio.name, language: language || undefined }, signal));
    });
  };

  return (
    <section className="card" aria-labelledby="stt-title">
      <h2 id="stt-title">Speech-to-text</h2>
      <form onSubmit={transcribe} className="stack">
        <div className="grid-2">
          <label className="field">
            <span>Audio file</span>
            <input
              ref={fileInputRef}
              type="file"
              name="file"
              accept="audio/*,.wav,.mp3,.ogg,.opus,.webm,.flac"
              onChange={(e) => {
                setAudio(e.target.files?.[0] ?? null);
                setResult(null);
              }}
            />
          </label>
          <label className="field">
            <span>Language</span>
            <select name="language" value={language} onChange={(e) => setLanguage(e.target.value)}>
              {LANGUAGES.map(([code, name]) => (
                <option key={code} value={code}>
                  {name}
                </option>
              ))}
            </select>
          </label>
        </div>
        <div className="actions">
          {recording ? (
            <button type="button" className="danger" onClick={stopRecording}>
              <span className="rec-dot" aria-hidden="true" /> Stop recording
            </button>
          ) : (
            <button type="button" className="secondary" onClick={startRecording}>
              Record from microphone
            </button>
          )}
          <button type="submit" disabled={!audio || busy || recording}>
            {busy ? 'Transcribing…' : 'Transcribe'}
          </button>
        </div>
        {audio && previewUrl && (
          <div className="preview">
            <span className="muted small">
              {audio.name} · {(audio.size / 1024).toFixed(1)} KiB
            </span>
            <audio controls src={previewUrl} />
          </div>
        )}
      </form>
      <ErrorMessage message={error} onDismiss={() => setError(null)} />
      {result && (
        <div className="stack" data-testid="stt-result">
          <div className="output">{result.text || <span className="muted">(no speech found)</span>}</div>
          <p className="muted small">
            {result.language && <>Language: {result.language} · </>}
            {typeof result.duration === 'number' && <>Duration: {result.duration.toFixed(2)} s</>}
          </p>
          {result.segments && result.segments.length > 0 && (
            <table className="segments">
              <thead>
                <tr>
                  <th>Start</th>
                  <th>End</th>
                  <th>Text</th>
                </tr>
              </thead>
              <tbody>
                {result.segments.map((segment, i) => (
                  <tr key={segment.id ?? i}>
                    <td>{segment.start.toFixed(2)}</td>
                    <td>{segment.end.toFixed(2)}</td>
                    <td>{segment.text}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      )}
    </section>
  );
}
