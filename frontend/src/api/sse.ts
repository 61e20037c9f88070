/** One Server-Sent Event: its `event:` name (default "message") and its joined `data:` lines. */
export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

/**
 * Incremental SSE parser (https://html.spec.whatwg.org/multipage/server-sent-events.html):
 * feed it decoded text as it arrives; it returns the events completed so far.
 */
export class SseParser {
  private buffer = '';

  push(chunk: string): SseEvent[] {
    this.buffer += chunk;
    const events: SseEvent[] = [];
    // Events end with a blank line; accept \n, \r\n and \r line endings.
    const blocks = this.buffer.split(/\r\n\r\n|\n\n|\r\r/);
    this.buffer = blocks.pop() ?? '';
    for (const block of blocks) {
      const event = parseBlock(block);
      if (event) events.push(event);
    }
    return events;
  }

  /** Whatever is left when the stream ends without a final blank line. */
  flush(): SseEvent[] {
    const rest = this.buffer;
    this.buffer = '';
    const event = rest.trim() ? parseBlock(rest) : null;
    return event ? [event] : [];
  }
}

function parseBlock(block: string): SseEvent | null {
  let event = 'message';
  let id: string | undefined;
  const data: string[] = [];
  for (const line of block.split(/\r\n|\n|\r/)) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') data.push(value);
    else if (field === 'event') event = value;
    else if (field === 'id') id = value;
  }
  if (data.length === 0) return null;
  return { event, data: data.join('\n'), id };
}

/** Reads a streamed response body as SSE events. */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
    yield* parser.push(decoder.decode());
    yield* parser.flush();
  } finally {
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
