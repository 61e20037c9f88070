/** An error answered by the API (`{"error": {"code", "message"}}`) or a failed request. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** Builds an ApiError from a non-2xx response, whatever shape its body has. */
export async function errorFromResponse(response: Response): Promise<ApiError> {
  const fallback = `${response.status} ${response.statusText || 'request failed'}`.trim();
  let body: string;
  try {
    body = await response.text();
  } catch {
    return new ApiError(response.status, 'http_error', fallback);
  }
  try {
    const parsed: unknown = JSON.parse(body);
    const { code, message } = describeErrorBody(parsed);
    if (message) return new ApiError(response.status, code ?? 'http_error', message);
  } catch {
    // Not JSON: fall through to the raw text.
  }
  const text = body.trim();
  return new ApiError(response.status, 'http_error', text && text.length < 300 ? text : fallback);
}

function describeErrorBody(body: unknown): { code?: string; message?: string } {
  if (!body || typeof body !== 'object') return {};
  const record = body as Record<string, unknown>;
  const error = record.error;
  if (error && typeof error === 'object') {
    const e = error as Record<string, unknown>;
    return {
      code: typeof e.code === 'string' ? e.code : undefined,
      message: typeof e.message === 'string' ? e.message : undefined,
    };
  }
  if (typeof error === 'string') return { message: error };
  // FastAPI's default shape, in case a route answers before the error handlers apply.
  const detail = record.detail;
  if (typeof detail === 'string') return { message: detail };
  if (Array.isArray(detail) && detail.length > 0) {
    const messages = detail
      .map((d) => (d && typeof d === 'object' ? String((d as Record<string, unknown>).msg ?? '') : ''))
      .filter(Boolean);
    if (messages.length) return { code: 'validation_error', message: messages.join('; ') };
  }
  return {};
}

/** A readable message for anything thrown by a request. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof DOMException && error.name === 'AbortError') return 'Request cancelled.';
  if (error instanceof TypeError) {
    // fetch() rejects with a TypeError when the server cannot be reached at all.
    return `Cannot reach the API server (${error.message}). Check the API base URL in Settings.`;
  }
  if (error instanceof Error) return error.message;
  return String(error);
}

/** Titles, in words, of the error codes the voice session and the API send. */
const ERROR_TITLES: Record<string, string> = {
  bad_frame: 'Message not understood',
  bad_text: 'Text not accepted',
  bad_config: 'Settings not accepted',
  unknown_type: 'Message not understood',
  empty_text: 'Nothing to send',
  text_too_long: 'Message too long',
  no_audio: 'Nothing was recorded',
  audio_too_large: 'Recording too long',
  audio_too_long: 'Recording too long',
  empty_audio: 'Empty recording',
  invalid_audio: 'Audio not readable',
  unsupported_audio_format: 'Audio format not supported',
  unsupported_format: 'Format not supported',
  stt_failed: 'Speech not recognized',
  session_failed: 'Voice session failed',
  too_many_sessions: 'Server busy',
  overloaded: 'Server busy',
  service_unavailable: 'Not ready yet',
  upstream_error: 'Speech server failed',
  bad_upstream_audio: 'Speech server failed',
  internal_error: 'Server error',
  bad_request: 'Request not accepted',
  unauthorized: 'API key needed',
  forbidden: 'Not allowed',
  microphone_unavailable: 'Microphone unavailable',
  connection_closed: 'Connection closed',
  protocol: 'Unreadable message',
  turn_cut: 'Long turn cut',
};

/** A short title, in words, for an error code: `too_many_sessions` -> "Server busy". */
export function errorTitle(code: string): string {
  const known = ERROR_TITLES[code];
  if (known) return known;
  const words = code.replace(/[_-]+/g, ' ').trim();
  return words ? words[0].toUpperCase() + words.slice(1) : 'Error';
}
