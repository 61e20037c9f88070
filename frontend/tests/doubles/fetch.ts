import { vi } from 'vitest';

type Route = (request: { url: string; init?: RequestInit }) => Response | Promise<Response>;

/**
 * A fetch test double: answers by URL path with the first matching route; unknown paths get 404.
 * Returns the vi.fn so tests can inspect the calls.
 */
export function installFakeFetch(routes: Record<string, Route>) {
  const fake = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.toString() : input.url;
    const path = new URL(url, 'http://localhost').pathname;
    const route = routes[path];
    if (!route) return jsonResponse({ error: { code: 'not_found', message: `No route ${path}` } }, 404);
    return route({ url, init });
  });
  vi.stubGlobal('fetch', fake);
  return fake;
}

export function jsonResponse(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

/** A streamed text/event-stream response whose body arrives in the given pieces. */
export function sseResponse(pieces: string[]): Response {
  const encoder = new TextEncoder();
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const piece of pieces) controller.enqueue(encoder.encode(piece));
      controller.close();
    },
  });
  return new Response(stream, { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
}
