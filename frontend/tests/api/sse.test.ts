import { afterEach, describe, expect, it, vi } from 'vitest';
import { ApiClient } from '../../src/api/client';
import { ApiError } from '../../src/api/errors';
import { interpretGenerationEvent, SseParser } from '../../src/api/sse';
import { installFakeFetch, jsonResponse, sseResponse } from '../doubles/fetch';

afterEach(() => vi.unstubAllGlobals());

describe('SseParser', () => {
  it('parses events split at any point across chunks', () => {
    const parser = new SseParser();
    const stream = 'data: {"type":"token","text":"Hel"}\n\ndata: {"type":"token","text":"lo"}\n\nevent: done\ndata: {}\n\n';
    const events = [];
    for (let i = 0; i < stream.length; i += 7) events.push(...parser.push(stream.slice(i, i + 7)));
    expect(events.map((e) => e.data)).toEqual(['{"type":"token","text":"Hel"}', '{"type":"token","text":"lo"}', '{}']);
    expect(events[2].event).toBe('done');
  });

  it('handles CRLF, comments, multi-line data and a missing final blank line', () => {
    const parser = new SseParser();
    const events = parser.push(': keep-alive\r\n\r\ndata: line one\r\ndata: line two\r\n\r\ndata: tail');
    expect(events).toEqual([{ event: 'message', data: 'line one\nline two', id: undefined }]);
    expect(parser.flush()).toEqual([{ event: 'message', data: 'tail', id: undefined }]);
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
