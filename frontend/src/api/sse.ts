import { createParser } from 'eventsource-parser';

/** One Server-Sent Event: its `event:` name (default "message") and its joined `data:` lines. */
export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

/**
 * Reads a streamed response body as Server-Sent Events (parsed by eventsource-parser, as the
 * EventSource standard says: an event ends at a blank line; comments and keep-alives are skipped).
 */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parsed: SseEvent[] = [];
  const parser = createParser({
    onEvent: ({ event, data, id }) => parsed.push({ event: event ?? 'message', data, id }),
  });
  let finished = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      parser.feed(done ? decoder.decode() : decoder.decode(value, { stream: true }));
      yield* parsed.splice(0);
      if (done) break;
    }
    finished = true;
  } finally {
    // A reader that stops early (a cancelled generation) lets go of the response, so it stops too.
    if (!finished) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

export interface TokenUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
  total_tokens?: number;
  [key: string]: unknown;
}

/** What one generation event means to the client. */
export type GenerationEvent =
  | { kind: 'token'; text: string }
  | { kind: 'done'; text?: string; usage?: TokenUsage; finishReason?: string }
  | { kind: 'error'; message: string; code?: string }
  | { kind: 'ignore' };

/**
 * Interprets an SSE event of /v1/generate_stream. The backend sends
 * `{"type":"token","text"}` then `{"type":"done","usage","text"}`; OpenAI-style chunks
 * (`choices[0].delta.content`, `choices[0].text`), `[DONE]` and plain text are understood too.
 */
export function interpretGenerationEvent(event: SseEvent): GenerationEvent {
  const raw = event.data;
  if (raw.trim() === '[DONE]') return { kind: 'done' };
  let payload: unknown;
  try {
    payload = JSON.parse(raw);
  } catch {
    return event.event === 'error' ? { kind: 'error', message: raw } : { kind: 'token', text: raw };
  }
  if (typeof payload === 'string') return { kind: 'token', text: payload };
  if (!payload || typeof payload !== 'object') return { kind: 'ignore' };
  const p = payload as Record<string, unknown>;
  const type = typeof p.type === 'string' ? p.type : event.event;

  if (type === 'error' || (p.error !== undefined && p.error !== null)) {
    const err = (p.error && typeof p.error === 'object' ? p.error : p) as Record<string, unknown>;
    return {
      kind: 'error',
      message: String(err.message ?? (typeof p.error === 'string' ? p.error : 'Generation failed')),
      code: typeof err.code === 'string' ? err.code : undefined,
    };
  }
  if (type === 'done' || type === 'end' || p.done === true) {
    return {
      kind: 'done',
      text: typeof p.text === 'string' ? p.text : undefined,
      usage: isObject(p.usage) ? (p.usage as TokenUsage) : undefined,
      finishReason: typeof p.finish_reason === 'string' ? p.finish_reason : undefined,
    };
  }
  if (Array.isArray(p.choices)) {
    const choice = (p.choices[0] ?? {}) as Record<string, unknown>;
    const delta = (choice.delta ?? {}) as Record<string, unknown>;
    const text =
      typeof delta.content === 'string' ? delta.content : typeof choice.text === 'string' ? choice.text : '';
    if (text) return { kind: 'token', text };
    if (typeof choice.finish_reason === 'string') {
      return {
        kind: 'done',
        finishReason: choice.finish_reason,
        usage: isObject(p.usage) ? (p.usage as TokenUsage) : undefined,
      };
    }
    return { kind: 'ignore' };
  }
  for (const key of ['text', 'token', 'delta', 'content'] as const) {
    const value = p[key];
    if (typeof value === 'string') return { kind: 'token', text: value };
  }
  return { kind: 'ignore' };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return !!value && typeof value === 'object' && !Array.isArray(value);
}
