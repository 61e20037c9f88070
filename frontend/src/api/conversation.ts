/**
 * The real-time voice socket, `WS /v1/conversation/ws` (see "The voice WebSocket" in README.md). Its JSON events and
 * messages are typed in socketProtocol.generated.ts, generated from the server's models
 * (backend/app/voice/socket_protocol.py): `npm run protocol:generate`, never by hand.
 */
import type { ClientMessage, ConfigMessage, ServerEvent } from './socketProtocol.generated';

export type * from './socketProtocol.generated';

export const CONVERSATION_PATH = '/v1/conversation/ws';

/** The subprotocol the server answers with; the key travels as a second, never-echoed offer. */
export const CONVERSATION_SUBPROTOCOL = 'gemmavoice';

// RFC 7230 token characters: what a WebSocket subprotocol may contain.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** The subprotocol that carries an API key: `apikey.<key>`, or `apikey-b64.<base64url>` for other characters. */
export function keySubprotocol(apiKey: string): string {
  if (TOKEN.test(apiKey)) return `apikey.${apiKey}`;
  let binary = '';
  for (const byte of new TextEncoder().encode(apiKey)) binary += String.fromCharCode(byte);
  return `apikey-b64.${btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')}`;
}

/**
 * Where and how to open the socket: an `api_key` query parameter (as ApiClient.webSocketUrl builds the URL)
 * is taken out of the URL and offered as a subprotocol instead, so the key never appears in a URL that a
 * server, proxy or browser history could log.
 */
export function socketTarget(url: string): { url: string; protocols: string[] } {
  const parsed = new URL(url);
  const apiKey = parsed.searchParams.get('api_key');
  parsed.searchParams.delete('api_key');
  const protocols = [CONVERSATION_SUBPROTOCOL];
  if (apiKey) protocols.push(keySubprotocol(apiKey));
  return { url: parsed.toString(), protocols };
}

/**
 * The session's settings, sent as the `config` message. The server's answer is a `config` event; a later
 * config replaces them all (send every field again).
 */
export type ConversationConfig = Omit<ConfigMessage, 'type'> & {
  input_sample_rate: number;
  /** true: the server detects turns; false: push-to-talk, the client sends end_turn. */
  vad: boolean;
};

export interface ConversationHandlers {
  onEvent: (event: ServerEvent) => void;
  /** A binary frame: reply audio, PCM s16le mono at the ready event's output_sample_rate. */
  onAudio: (pcm: ArrayBuffer) => void;
  /** The socket closed; `code`/`reason` as sent by the server when it closed it. */
  onClose: (code: number, reason: string) => void;
  /** A frame that is not valid JSON, or a socket-level error. */
  onProtocolError?: (message: string) => void;
}

/** A thin wrapper over the WebSocket that speaks the conversation protocol. */
export class ConversationSocket {
  private socket: WebSocket | null = null;

  constructor(
    private readonly url: string,
    private readonly handlers: ConversationHandlers,
  ) {}

  /** Opens the socket (the key, if any, as a subprotocol) and sends the config as the first frame. */
  open(config: ConversationConfig): void {
    const target = socketTarget(this.url);
    const socket = new WebSocket(target.url, target.protocols);
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    socket.onopen = () => this.configure(config);
    socket.onmessage = (message: MessageEvent) => this.receive(message.data);
    socket.onerror = () => this.handlers.onProtocolError?.('WebSocket error');
    socket.onclose = (event: CloseEvent) => {
      if (this.socket === socket) this.socket = null;
      this.handlers.onClose(event.code, event.reason);
    };
  }

  get isOpen(): boolean {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  /** Sends the session's settings; a later config replaces them all (send every field again). */
  configure(config: ConversationConfig): void {
    this.sendJson({ type: 'config', ...config });
  }

  sendAudio(pcm: ArrayBuffer): void {
    if (this.isOpen) this.socket!.send(pcm);
  }

  sendText(text: string): void {
    this.sendJson({ type: 'text', text });
  }

  endTurn(): void {
    this.sendJson({ type: 'end_turn' });
  }

  interrupt(): void {
    this.sendJson({ type: 'interrupt' });
  }

  close(): void {
    const socket = this.socket;
    if (!socket) return;
    if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) {
      socket.close(1000, 'client closed');
    }
  }

  private sendJson(message: ClientMessage): void {
    if (this.isOpen) this.socket!.send(JSON.stringify(message));
  }

  private receive(data: unknown): void {
    if (typeof data === 'string') {
      let event: unknown;
      try {
        event = JSON.parse(data);
      } catch {
        this.handlers.onProtocolError?.(`Unreadable message from the server: ${data.slice(0, 120)}`);
        return;
      }
      if (event && typeof event === 'object' && typeof (event as { type?: unknown }).type === 'string') {
        this.handlers.onEvent(event as ServerEvent);
      }
    } else if (data instanceof ArrayBuffer) {
      this.handlers.onAudio(data);
    } else if (data instanceof Blob) {
      // Only if binaryType could not be set; keeps the order of frames within one blob.
      void data.arrayBuffer().then((buffer) => this.handlers.onAudio(buffer));
    }
  }
}
