import { afterEach, describe, expect, it, vi } from 'vitest';
import { ApiClient } from '../../src/api/client';
import { ApiError } from '../../src/api/errors';
import { interpretGenerationEvent, readSse } from '../../src/api/sse';
import { installFakeFetch, jsonResponse, sseResponse } from '../doubles/fetch';

afterEach(() => vi.unstubAllGlobals());

async function eventsOf(pieces: string[]) {
  const events = [];
  for await (const event of readSse(sseResponse(pieces).body!)) events.push(event);
  return events;
}

describe('readSse', () => {
  it('parses events split at any point across chunks, as the backend (sse-starlette) frames them', async () => {
    const stream =
      'data: {"type":"token","text":"Hel"}\r\n\r\n: ping - 2024-01-01\r\n\r\ndata: {"type":"token","text":"lo"}\r\n\r\nevent: done\r\ndata: {}\r\n\r\n';
    const pieces = [];
    for (let i = 0; i < stream.length; i += 7) pieces.push(stream.slice(i, i + 7));
    const events = await eventsOf(pieces);
    expect(events.map((e) => e.data)).toEqual(['{"type":"token","text":"Hel"}', '{"type":"token","text":"lo"}', '{}']);
    expect(events.map((e) => e.event)).toEqual(['message', 'message', 'done']);
  });

  it('joins multi-line data and leaves out an event the stream never finished', async () => {
    const events = await eventsOf(['data: line one\ndata: line two\n\n', 'data: tail']);
    expect(events).toEqual([{ event: 'message', data: 'line one\nline two', id: undefined }]);
  });

  it('keeps characters split across chunks whole', async () => {
    const bytes = new TextEncoder().encode('data: "héllo"\n\n');
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(bytes.slice(0, 9)); // the é is cut in half
        controller.enqueue(bytes.slice(9));
        controller.close();
      },
    });
    const events = [];
    for await (const event of readSse(body)) events.push(event);
    expect(events.map((e) => e.data)).toEqual(['"héllo"']);
  });

  it('lets go of the body when the reader stops early', async () => {
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('data: one\n\ndata: two\n\n'));
      },
      cancel() {
        cancelled = true;
      },
    });
    for await (const event of readSse(body)) {
      expect(event.data).toBe('one');
      break;
    }
    expect(cancelled).toBe(true);
  });
});

describe('interpretGenerationEvent', () => {
  const ev = (data: string, event = 'message') => interpretGenerationEvent({ event, data });

  it('reads the backend shape', () => {
    expect(ev('{"type":"token","text":"Hi"}')).toEqual({ kind: 'token', text: 'Hi' });
    expect(ev('{"type":"done","text":"Hi there","usage":{"completion_tokens":2}}')).toEqual({
      kind: 'done',
      text: 'Hi there',
      usage: { completion_tokens: 2 },
      finishReason: undefined,
    });
    expect(ev('{"type":"error","code":"llm_failed","message":"boom"}')).toEqual({
      kind: 'error',
      code: 'llm_failed',
      message: 'boom',
    });
  });

  it('reads OpenAI-like chunks and [DONE]', () => {
    expect(ev('{"choices":[{"delta":{"content":"Hey"}}]}')).toEqual({ kind: 'token', text: 'Hey' });
    expect(ev('{"choices":[{"text":"Hey"}]}')).toEqual({ kind: 'token', text: 'Hey' });
    expect(ev('{"choices":[{"delta":{},"finish_reason":"stop"}]}')).toMatchObject({ kind: 'done' });
    expect(ev('[DONE]')).toEqual({ kind: 'done' });
    expect(ev('{"error":{"code":"x","message":"bad"}}')).toEqual({ kind: 'error', code: 'x', message: 'bad' });
  });

  it('accepts plain text and ignores unknown objects', () => {
    expect(ev('just words')).toEqual({ kind: 'token', text: 'just words' });
    expect(ev('{"token":"t"}')).toEqual({ kind: 'token', text: 't' });
    expect(ev('{"type":"ping"}')).toEqual({ kind: 'ignore' });
  });
});

describe('ApiClient.generateStream', () => {
  it('posts the request with the key and yields tokens then done', async () => {
    const fetchMock = installFakeFetch({
      '/v1/generate_stream': () =>
        sseResponse([
          'data: {"type":"token","text":"The "}\n\ndata: {"type":"tok',
          'en","text":"sea"}\n\n',
          'data: {"type":"done","text":"The sea","usage":{"completion_tokens":2}}\n\n',
        ]),
    });
    const client = new ApiClient({ apiBaseUrl: 'http://api.test:8000/', apiKey: 'secret' });
    const items = [];
    for await (const item of client.generateStream({ prompt: 'hi', max_tokens: 5 })) items.push(item);

    expect(items.map((i) => i.kind)).toEqual(['token', 'token', 'done']);
    expect(items.filter((i) => i.kind === 'token').map((i) => (i as { text: string }).text).join('')).toBe('The sea');
    const [url, init] = fetchMock.mock.calls[0] as [string, RequestInit];
    expect(url).toBe('http://api.test:8000/v1/generate_stream');
    expect((init.headers as Record<string, string>).Authorization).toBe('Bearer secret');
    expect(JSON.parse(init.body as string)).toEqual({ prompt: 'hi', max_tokens: 5 });
  });

  it('turns an error event and an error status into ApiError with the message', async () => {
    installFakeFetch({
      '/v1/generate_stream': () => sseResponse(['data: {"type":"error","code":"busy","message":"Model busy"}\n\n']),
    });
    const client = new ApiClient({ apiBaseUrl: '', apiKey: '' });
    await expect(async () => {
      for await (const _ of client.generateStream({ prompt: 'x' })) void _;
    }).rejects.toThrow('Model busy');

    installFakeFetch({
      '/v1/generate_stream': () => jsonResponse({ error: { code: 'unauthorized', message: 'Invalid API key' } }, 401),
    });
    const error = await (async () => {
      try {
        for await (const _ of client.generateStream({ prompt: 'x' })) void _;
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 401, code: 'unauthorized', message: 'Invalid API key' });
  });
});
