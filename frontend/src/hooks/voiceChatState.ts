import type { ServerEvent } from '../api/conversation';

/** What the assistant is doing, as the indicator shows it. */
export type AgentState = 'idle' | 'listening' | 'thinking' | 'speaking';
export type ConnectionStatus = 'idle' | 'connecting' | 'ready' | 'closed';

export interface ChatItem {
  id: number;
  role: 'user' | 'assistant';
  text: string;
  /** A user transcript stops changing, or an assistant reply has ended. */
  final: boolean;
  interrupted?: boolean;
  /** How a user turn was given. */
  source?: 'voice' | 'typed';
}

export interface VoiceChatError {
  id: number;
  code: string;
  message: string;
}

export interface VoiceChatState {
  connection: ConnectionStatus;
  agent: AgentState;
  /** The server's VAD hears the user right now. */
  userSpeaking: boolean;
  /** Reply audio is queued or playing locally. */
  audioPlaying: boolean;
  /** The server has ended the current reply's text (audio may still play). */
  responseEnded: boolean;
  sessionId: string | null;
  outputSampleRate: number | null;
  items: ChatItem[];
  metrics: Record<string, unknown> | null;
  errors: VoiceChatError[];
  nextId: number;
}

export const initialVoiceChatState: VoiceChatState = {
  connection: 'idle',
  agent: 'idle',
  userSpeaking: false,
  audioPlaying: false,
  responseEnded: true,
  sessionId: null,
  outputSampleRate: null,
  items: [],
  metrics: null,
  errors: [],
  nextId: 1,
};

export type VoiceChatAction =
  | { type: 'connecting' }
  | { type: 'server'; event: ServerEvent }
  | { type: 'audio-started' }
  | { type: 'playback-idle' }
  | { type: 'typed'; text: string }
  | { type: 'turn-ended' }
  | { type: 'interrupt-requested' }
  | { type: 'closed'; message?: string }
  | { type: 'error'; code: string; message: string }
  | { type: 'dismiss-error'; id: number }
  | { type: 'clear' };

const MAX_ERRORS = 5;

export function voiceChatReducer(state: VoiceChatState, action: VoiceChatAction): VoiceChatState {
  switch (action.type) {
    case 'connecting':
      return { ...initialVoiceChatState, items: state.items, nextId: state.nextId, connection: 'connecting' };
    case 'server':
      return applyServerEvent(state, action.event);
    case 'audio-started':
      return { ...state, audioPlaying: true, agent: 'speaking' };
    case 'playback-idle':
      return {
        ...state,
        audioPlaying: false,
        agent: state.connection !== 'ready' ? state.agent : state.responseEnded ? 'listening' : 'thinking',
      };
    case 'typed': {
      const next = pushItem(state, { role: 'user', text: action.text, final: true, source: 'typed' });
      return { ...next, agent: 'thinking', responseEnded: false };
    }
    case 'turn-ended':
      return { ...state, agent: 'thinking', responseEnded: false };
    case 'interrupt-requested':
      return finishAssistant({ ...state, audioPlaying: false, responseEnded: true, agent: 'listening' }, true);
    case 'closed': {
      const closed: VoiceChatState = {
        ...finishAssistant(state, false),
        connection: 'closed',
        agent: 'idle',
        userSpeaking: false,
        audioPlaying: false,
      };
      return action.message ? addError(closed, 'connection_closed', action.message) : closed;
    }
    case 'error':
      return addError(state, action.code, action.message);
    case 'dismiss-error':
      return { ...state, errors: state.errors.filter((e) => e.id !== action.id) };
    case 'clear':
      return { ...state, items: [], metrics: null, errors: [] };
  }
}

function applyServerEvent(state: VoiceChatState, event: ServerEvent): VoiceChatState {
  switch (event.type) {
    case 'ready':
      return {
        ...state,
        connection: 'ready',
        agent: 'listening',
        sessionId: event.session_id ?? null,
        outputSampleRate: event.output_sample_rate,
      };
    case 'vad':
      return { ...state, userSpeaking: event.state === 'speech_start' };
    case 'transcript':
      return applyUserTranscript(state, event.text ?? '', event.final !== false);
    case 'text': {
      const delta = event.delta ?? '';
      const last = state.items[state.items.length - 1];
      const agent = state.audioPlaying ? 'speaking' : 'thinking';
      if (last && last.role === 'assistant' && !last.final) {
        return { ...replaceLast(state, { ...last, text: last.text + delta }), agent, responseEnded: false };
      }
      return { ...pushItem(state, { role: 'assistant', text: delta, final: false }), agent, responseEnded: false };
    }
    case 'response_end': {
      const ended = finishAssistant(state, false);
      return { ...ended, responseEnded: true, agent: state.audioPlaying ? 'speaking' : 'listening' };
    }
    case 'interrupted':
      return finishAssistant({ ...state, audioPlaying: false, responseEnded: true, agent: 'listening' }, true);
    case 'turn_cut':
      return addError(state, 'turn_cut', event.message ?? 'You spoke for a long time without a pause: answering what was said so far.');
    case 'metrics': {
      const { type: _type, ...metrics } = event;
      return { ...state, metrics };
    }
    case 'error':
      return addError(state, event.code ?? 'error', event.message ?? 'The server reported an error.');
    default:
      return state;
  }
}

function applyUserTranscript(state: VoiceChatState, text: string, final: boolean): VoiceChatState {
  const trimmed = text.trim();
  // The user's turn, whether heard or typed, moves the assistant to thinking once it is final.
  const agent: AgentState = final ? 'thinking' : state.agent;
  // Find the user's transcript in progress (it may precede an assistant message it interrupted).
  for (let i = state.items.length - 1; i >= 0; i--) {
    const item = state.items[i];
    if (item.role === 'user' && !item.final && item.source === 'voice') {
      const items = state.items.slice();
      items[i] = { ...item, text, final };
      return { ...state, items, agent, responseEnded: final ? false : state.responseEnded };
    }
  }
  if (!trimmed) return state;
  const last = state.items[state.items.length - 1];
  // Some servers echo a typed turn as its transcript: show it once.
  if (final && last?.role === 'user' && last.source === 'typed' && sameText(last.text, trimmed)) {
    return state;
  }
  const next = pushItem(state, { role: 'user', text, final, source: 'voice' });
  return { ...next, agent, responseEnded: final ? false : state.responseEnded };
}

/** Ends the reply in progress (the user's barge-in transcript may already follow it). */
function finishAssistant(state: VoiceChatState, interrupted: boolean): VoiceChatState {
  const index = state.items.findLastIndex((item) => item.role === 'assistant' && !item.final);
  if (index === -1) return state;
  const items = state.items.slice();
  items[index] = { ...items[index], final: true, interrupted: interrupted || undefined };
  return { ...state, items };
}

function pushItem(state: VoiceChatState, item: Omit<ChatItem, 'id'>): VoiceChatState {
  return { ...state, items: [...state.items, { ...item, id: state.nextId }], nextId: state.nextId + 1 };
}

function replaceLast(state: VoiceChatState, item: ChatItem): VoiceChatState {
  return { ...state, items: [...state.items.slice(0, -1), item] };
}

function addError(state: VoiceChatState, code: string, message: string): VoiceChatState {
  const errors = [...state.errors, { id: state.nextId, code, message }].slice(-MAX_ERRORS);
  return { ...state, errors, nextId: state.nextId + 1 };
}

function sameText(a: string, b: string): boolean {
  const norm = (s: string) => s.trim().toLowerCase().replace(/[.!?]+$/, '');
  return norm(a) === norm(b);
}
