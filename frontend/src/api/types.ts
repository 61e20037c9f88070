/** Shapes of the GemmaVoice REST API (the server's OpenAPI schema, at /docs, has them all). */

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface GenerateRequest {
  prompt?: string;
  messages?: ChatMessage[];
  system?: string;
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  stop?: string[];
}

export interface TranscriptionSegment {
  id?: number;
  start: number;
  end: number;
  text: string;
}

export interface TranscriptionResult {
  text: string;
  language?: string | null;
  duration?: number | null;
  segments?: TranscriptionSegment[];
}

export interface SpeechToTextRequest {
  file: Blob;
  filename?: string;
  language?: string;
  prompt?: string;
}

export interface TextToSpeechRequest {
  text: string;
  voice?: string;
  format?: 'wav' | 'pcm' | 'mp3';
}

export interface LiveKitStatus {
  configured: boolean;
  url?: string | null;
  room_name?: string | null;
  agent_name?: string | null;
}

export interface LiveKitTokenRequest {
  /** Leave out for a fresh room; set (under the server's LIVEKIT_ROOM_NAME prefix) only to join one on purpose. */
  room_name?: string;
  /** Display name; the identity is always made by the server. */
  participant_name?: string;
  metadata?: string;
  ttl?: number;
}

export interface LiveKitToken {
  token: string;
  url: string;
  room_name: string;
  participant_identity: string;
  expires_at?: string | number;
}
