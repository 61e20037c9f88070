import { ApiError, errorFromResponse } from './errors';
import { interpretGenerationEvent, readSse, type GenerationEvent } from './sse';
import { normalizeBaseUrl, type Settings } from './settings';
import type {
  GenerateRequest,
  LiveKitStatus,
  LiveKitToken,
  LiveKitTokenRequest,
  SpeechToTextRequest,
  TextToSpeechRequest,
  TranscriptionResult,
} from './types';

/** Typed client of the GemmaVoice REST API, bound to the user's settings. */
export class ApiClient {
  readonly baseUrl: string;
  private readonly apiKey: string;

  constructor(settings: Settings) {
    this.baseUrl = normalizeBaseUrl(settings.apiBaseUrl);
    this.apiKey = settings.apiKey.trim();
  }

  /** Absolute or same-origin-relative URL of an API path. */
  url(path: string): string {
    return `${this.baseUrl}${path}`;
  }

  /**
   * ws(s):// URL of a WebSocket path. Browsers cannot set headers on a WebSocket: the key is put in the query
   * here and ConversationSocket moves it into the `apikey.<key>` subprotocol before opening, so it is never sent
   * in the URL (see socketTarget in conversation.ts).
   */
  webSocketUrl(path: string, origin: string = window.location.origin): string {
    const url = new URL(this.url(path), origin);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.apiKey) url.searchParams.set('api_key', this.apiKey);
    return url.toString();
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const headers: Record<string, string> = { ...extra };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    return headers;
  }

  private async fetchOk(path: string, init: RequestInit): Promise<Response> {
    const response = await fetch(this.url(path), init);
    if (!response.ok) throw await errorFromResponse(response);
    return response;
  }

  private async getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
    const response = await this.fetchOk(path, { headers: this.headers({ Accept: 'application/json' }), signal });
    return (await response.json()) as T;
  }

  private async postJson<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
    const response = await this.fetchOk(path, {
      method: 'POST',
      headers: this.headers({ 'Content-Type': 'application/json', Accept: 'application/json' }),
      body: JSON.stringify(body),
      signal,
    });
    return (await response.json()) as T;
  }

  /** True when GET /health/ready answers 200 (health routes are open, no key needed). */
  async isReady(signal?: AbortSignal): Promise<boolean> {
    const response = await fetch(this.url('/health/ready'), { signal });
    return response.ok;
  }

  /** Streams a generation; yields tokens, then one done event. Throws ApiError on an error event. */
  async *generateStream(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerationEvent> {
    const response = await this.fetchOk('/v1/generate_stream', {
      method: 'POST',
      headers: this.headers({ 'Content-Type': 'application/json', Accept: 'text/event-stream' }),
      body: JSON.stringify(request),
      signal,
    });
    if (!response.body) throw new ApiError(response.status, 'empty_stream', 'The server sent no stream.');
    for await (const event of readSse(response.body)) {
      const interpreted = interpretGenerationEvent(event);
      if (interpreted.kind === 'ignore') continue;
      if (interpreted.kind === 'error') {
        throw new ApiError(response.status, interpreted.code ?? 'generation_error', interpreted.message);
      }
      yield interpreted;
      if (interpreted.kind === 'done') return;
    }
  }

  async speechToText(request: SpeechToTextRequest, signal?: AbortSignal): Promise<TranscriptionResult> {
    const form = new FormData();
    form.append('file', request.file, request.filename ?? fileNameFor(request.file));
    if (request.language) form.append('language', request.language);
    if (request.prompt) form.append('prompt', request.prompt);
    const response = await this.fetchOk('/v1/speech-to-text', {
      method: 'POST',
      headers: this.headers({ Accept: 'application/json' }),
      body: form,
      signal,
    });
    return (await response.json()) as TranscriptionResult;
  }

  /** Synthesizes speech and returns the audio bytes (WAV unless another format is asked for). */
  async textToSpeech(request: TextToSpeechRequest, signal?: AbortSignal): Promise<Blob> {
    const format = request.format ?? 'wav';
    const body: Record<string, unknown> = { text: request.text, format };
    if (request.voice) body.voice = request.voice;
    const response = await this.fetchOk('/v1/text-to-speech', {
      method: 'POST',
      headers: this.headers({ 'Content-Type': 'application/json', Accept: mimeForFormat(format) }),
      body: JSON.stringify(body),
      signal,
    });
    const blob = await response.blob();
    return blob.type ? blob : new Blob([blob], { type: mimeForFormat(format) });
  }

  liveKitStatus(signal?: AbortSignal): Promise<LiveKitStatus> {
    return this.getJson<LiveKitStatus>('/v1/livekit/status', signal);
  }

  liveKitToken(request: LiveKitTokenRequest = {}, signal?: AbortSignal): Promise<LiveKitToken> {
    return this.postJson<LiveKitToken>('/v1/livekit/token', request, signal);
  }
}

function mimeForFormat(format: string): string {
  switch (format) {
    case 'mp3':
      return 'audio/mpeg';
    case 'pcm':
      return 'audio/pcm';
    default:
      return 'audio/wav';
  }
}

function fileNameFor(blob: Blob): string {
  if (blob instanceof File && blob.name) return blob.name;
  const subtype = blob.type.split('/')[1]?.split(';')[0];
  return `recording.${subtype || 'wav'}`;
}
