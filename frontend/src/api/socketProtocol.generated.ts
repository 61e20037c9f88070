// GENERATED FILE: do not edit. The voice WebSocket protocol (WS /v1/conversation/ws), generated from the
// pydantic models in backend/app/voice/socket_protocol.py by json-schema-to-typescript:
//   cd frontend && npm run protocol:generate
// backend/tests/test_socket_protocol.py fails when this file differs from what the models give.

/**
 * A JSON event from the server.
 */
export type ServerEvent =
  | ReadyEvent
  | ConfigEvent
  | VadEvent
  | TranscriptEvent
  | TextEvent
  | ResponseEndEvent
  | InterruptedEvent
  | PlaybackEvent
  | TurnCutEvent
  | MetricsEvent
  | ErrorEvent;
/**
 * A JSON message from the client.
 */
export type ClientMessage = ConfigMessage | TextMessage | EndTurnMessage | InterruptMessage | AudioMessage;

/**
 * The JSON frames of WS /v1/conversation/ws (backend/app/voice/socket_protocol.py).
 */
export interface SocketProtocol {
  server: ServerEvent;
  client: ClientMessage;
}
/**
 * First event of every session.
 */
export interface ReadyEvent {
  type: 'ready';
  session_id: string;
  input_sample_rate: number;
  /**
   * the rate of the reply audio (binary frames)
   */
  output_sample_rate: number;
  /**
   * true: the server finds turns; false: push-to-talk
   */
  vad: boolean;
  models_ready: boolean;
}
/**
 * The answer to the client's `config`: the settings in force.
 */
export interface ConfigEvent {
  type: 'config';
  input_sample_rate: number;
  vad: boolean;
  output_sample_rate: number;
}
/**
 * The server's voice activity detector hears the user start or stop speaking.
 */
export interface VadEvent {
  type: 'vad';
  state: 'speech_start' | 'speech_end';
}
/**
 * The user's words.
 */
export interface TranscriptEvent {
  type: 'transcript';
  role: 'user';
  text: string;
  final: boolean;
  language: string | null;
}
/**
 * The reply's words, sent as the client plays them.
 */
export interface TextEvent {
  type: 'text';
  role: 'assistant';
  delta: string;
}
/**
 * The reply is complete (its audio may still be playing at the client).
 */
export interface ResponseEndEvent {
  type: 'response_end';
  text: string;
}
/**
 * The reply stops for good: the client drops the reply audio it still holds.
 */
export interface InterruptedEvent {
  type: 'interrupted';
  reason: 'barge_in' | 'client' | 'new_turn';
}
/**
 * The user may be talking over the reply: hold its audio; `resumed` if it was only a noise.
 */
export interface PlaybackEvent {
  type: 'playback';
  state: 'paused' | 'resumed';
}
/**
 * The user spoke past the server's maximum turn length: what was said so far is answered.
 */
export interface TurnCutEvent {
  type: 'turn_cut';
  reason: 'max_turn_length';
  max_seconds: number;
  message: string;
}
/**
 * One reply's timings, after its `response_end`. Null: not measured for this turn.
 */
export interface MetricsEvent {
  type: 'metrics';
  turn: number;
  source: 'voice' | 'text' | 'push_to_talk' | 'recorded';
  llm_first_token_ms: number | null;
  first_sentence_ms: number | null;
  tts_first_audio_ms: number | null;
  reply_first_audio_ms: number | null;
  reply_audio_seconds: number;
  /**
   * voice turns only
   */
  stt_ms?: number | null;
  /**
   * voice turns only
   */
  endpointing_ms?: number | null;
  /**
   * spoken turns only: end of speech to first reply audio
   */
  voice_to_voice_ms?: number;
}
/**
 * A refused frame or a failed turn; the session stays open (unless the server closes it, as when full).
 */
export interface ErrorEvent {
  type: 'error';
  code: string;
  message: string;
}
/**
 * The session's settings; a later `config` replaces them (absent fields keep their values, except
 * `instructions`, `voice` and `language`, which go back to the server's defaults).
 */
export interface ConfigMessage {
  type: 'config';
  /**
   * the microphone's rate: one of (8000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
   */
  input_sample_rate?: number;
  instructions?: string | null;
  /**
   * true: the server finds turns; false: push-to-talk, the client sends end_turn
   */
  vad?: boolean;
  voice?: string | null;
  language?: string | null;
}
/**
 * A typed user turn.
 */
export interface TextMessage {
  type: 'text';
  text: string;
}
/**
 * Push-to-talk (`vad: false`): the user let go; the audio since the last turn is answered.
 */
export interface EndTurnMessage {
  type: 'end_turn';
}
/**
 * Stop the reply now.
 */
export interface InterruptMessage {
  type: 'interrupt';
}
/**
 * A whole recorded utterance, base64, in any supported format (the server finds which).
 */
export interface AudioMessage {
  type: 'audio';
  data: string;
  /**
   * a hint only (wav, webm, ...): the server reads the data
   */
  format?: string | null;
}
