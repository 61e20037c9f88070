import { useState, type FormEvent } from 'react';
import type { TokenUsage } from '../api/sse';
import { useBusyTask } from '../hooks/useBusyTask';
import { Announcer } from './Announcer';
import { ErrorMessage } from './ErrorMessage';
import { useApiClient } from './SettingsContext';

/** Streams a completion from POST /v1/generate_stream. */
export function TextGenerationPanel() {
  const client = useApiClient();
  const [prompt, setPrompt] = useState('Write a haiku about the sea.');
  const [system, setSystem] = useState('');
  const [maxTokens, setMaxTokens] = useState(256);
  const [temperature, setTemperature] = useState(0.7);
  const [output, setOutput] = useState('');
  const [usage, setUsage] = useState<TokenUsage | null>(null);
  const [elapsedMs, setElapsedMs] = useState<number | null>(null);
  const { busy: streaming, error, setError, run, cancel } = useBusyTask();
  const [generation, setGeneration] = useState(0); // which reply the output is, for the announcer

  const generate = async (event: FormEvent) => {
    event.preventDefault();
    if (!prompt.trim() || streaming) return;
    setGeneration((n) => n + 1);
    setOutput('');
    setUsage(null);
    setElapsedMs(null);
    await run(async (signal) => {
      const started = performance.now();
      let streamed = '';
      try {
        const request = {
          prompt,
          max_tokens: maxTokens,
          temperature,
          ...(system.trim() ? { system: system.trim() } : {}),
        };
        for await (const item of client.generateStream(request, signal)) {
          if (item.kind === 'token') {
            streamed += item.text;
            setOutput(streamed);
          } else if (item.kind === 'done') {
            if (!streamed && item.text) setOutput(item.text);
            setUsage(item.usage ?? null);
          }
        }
      } finally {
        setElapsedMs(performance.now() - started);
      }
    });
  };

  return (
    <section className="card" aria-labelledby="generation-title">
      <h2 id="generation-title">Text generation</h2>
      <form onSubmit={generate} className="stack">
        <label className="field">
          <span>Prompt</span>
          <textarea
            name="prompt"
            rows={4}
            value={prompt}
            onChange={(e) => setPrompt(e.target.value)}
            onKeyDown={(e) => {
              if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) void generate(e);
            }}
          />
        </label>
        <details>
          <summary>Options</summary>
          <div className="grid-3">
            <label className="field">
              <span>System prompt</span>
              <input value={system} onChange={(e) => setSystem(e.target.value)} placeholder="optional" />
            </label>
            <label className="field">
              <span>Max tokens</span>
              <input
                type="number"
                min={1}
                max={4096}
                value={maxTokens}
                onChange={(e) => setMaxTokens(Number(e.target.value))}
              />
            </label>
            <label className="field">
              <span>Temperature: {temperature.toFixed(2)}</span>
              <input
                type="range"
                min={0}
                max={1.5}
                step={0.05}
                value={temperature}
                onChange={(e) => setTemperature(Number(e.target.value))}
              />
            </label>
          </div>
        </details>
        <div className="actions">
          <button type="submit" disabled={streaming || !prompt.trim()}>
            {streaming ? 'Generating…' : 'Generate'}
          </button>
          {streaming && (
            <button type="button" className="secondary" onClick={cancel}>
              Stop
            </button>
          )}
        </div>
      </form>
      <ErrorMessage message={error} onDismiss={() => setError(null)} />
      <Announcer source={generation} text={output} final={!streaming} />
      <div className={`output${streaming ? ' streaming' : ''}`} data-testid="generation-output">
        {output || <span className="muted">The reply streams here.</span>}
      </div>
      {(usage || elapsedMs !== null) && !streaming && (
        <p className="muted small" data-testid="generation-usage">
          {usage?.completion_tokens !== undefined && `${usage.completion_tokens} tokens · `}
          {usage?.prompt_tokens !== undefined && `${usage.prompt_tokens} prompt tokens · `}
          {elapsedMs !== null && `${(elapsedMs / 1000).toFixed(2)} s`}
        </p>
      )}
    </section>
  );
}
