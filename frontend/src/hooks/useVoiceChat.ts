import { useCallback, useEffect, useReducer, useRef, useState } from 'react';
import type { ApiClient } from '../api/client';
import { CONVERSATION_PATH, ConversationSocket, type ConversationConfig, type ServerEvent } from '../api/conversation';
import { CAPTURE_SAMPLE_RATE, MicrophoneCapture, type AudioProcessing } from '../audio/microphone';
import { PcmPlayer } from '../audio/pcmPlayer';
import { initialVoiceChatState, voiceChatReducer } from './voiceChatState';

export type TurnMode = 'vad' | 'push-to-talk';

export interface VoiceChatOptions {
  turnMode: TurnMode;
  instructions?: string;
  voice?: string;
  language?: string;
  audioProcessing?: AudioProcessing;
}

export interface AudioStats {
  bytesReceived: number;
  scheduledMs: number;
  playedMs: number;
  bytesSent: number;
}

const EMPTY_STATS: AudioStats = { bytesReceived: 0, scheduledMs: 0, playedMs: 0, bytesSent: 0 };
const STATS_INTERVAL_MS = 200;

/** An AudioContext at the rate the microphone is sent at; null where the browser cannot make one. */
function newCaptureContext(): AudioContext | null {
  try {
    const context = new AudioContext({ sampleRate: CAPTURE_SAMPLE_RATE });
    void context.resume().catch(() => undefined);
    return context;
  } catch {
    return null;
  }
}

/**
 * One voice conversation over `WS /v1/conversation/ws`: microphone in (AudioWorklet, 16 kHz PCM),
 * reply audio out (PcmPlayer), and the conversation state the panel renders.
 */
export function useVoiceChat(client: ApiClient) {
  const [state, dispatch] = useReducer(voiceChatReducer, initialVoiceChatState);
  const [level, setLevel] = useState(0);
  const [talking, setTalking] = useState(false);
  const [stats, setStats] = useState<AudioStats>(EMPTY_STATS);

  const socketRef = useRef<ConversationSocket | null>(null);
  const contextRef = useRef<AudioContext | null>(null);
  const captureContextRef = useRef<AudioContext | null>(null);
  const micRef = useRef<MicrophoneCapture | null>(null);
  const playerRef = useRef<PcmPlayer | null>(null);
  const bytesSentRef = useRef(0);
  const sendAudioRef = useRef(true);
  const readyRef = useRef(false);
  const pushToTalkRef = useRef(false);

  const publishStats = useCallback(() => {
    const player = playerRef.current;
    setStats({
      bytesReceived: player?.bytesReceived ?? 0,
      scheduledMs: Math.round((player?.scheduledSeconds ?? 0) * 1000),
      playedMs: Math.round((player?.playedSeconds ?? 0) * 1000),
      bytesSent: bytesSentRef.current,
    });
  }, []);

  const teardown = useCallback(() => {
    micRef.current?.stop();
    micRef.current = null;
    playerRef.current?.stop();
    for (const ref of [contextRef, captureContextRef]) {
      const context = ref.current;
      ref.current = null;
      if (context && context.state !== 'closed') void context.close();
    }
    socketRef.current = null;
    readyRef.current = false;
    setLevel(0);
    setTalking(false);
  }, []);

  const connect = useCallback(
    async (options: VoiceChatOptions) => {
      if (socketRef.current) return;
      dispatch({ type: 'connecting' });
      playerRef.current = null;
      bytesSentRef.current = 0;
      setStats(EMPTY_STATS);
      pushToTalkRef.current = options.turnMode === 'push-to-talk';
      // Hands-free sends the microphone all the time; push-to-talk only while the button is held.
      sendAudioRef.current = !pushToTalkRef.current;

      // Created inside the click that connects, so the browser lets them run: one plays the reply at
      // the device's rate, one captures the microphone at the rate the server is sent.
      const context = new AudioContext();
      contextRef.current = context;
      void context.resume().catch(() => undefined);
      const captureContext = newCaptureContext();
      captureContextRef.current = captureContext;
      const config: ConversationConfig = {
        input_sample_rate: CAPTURE_SAMPLE_RATE,
        vad: options.turnMode === 'vad',
        ...(options.instructions?.trim() ? { instructions: options.instructions.trim() } : {}),
        ...(options.voice?.trim() ? { voice: options.voice.trim() } : {}),
        ...(options.language?.trim() ? { language: options.language.trim() } : {}),
      };

      const startMicrophone = async () => {
        const contexts = captureContext ? [captureContext, context] : [context];
        const mic = new MicrophoneCapture(contexts, {
          onChunk: (pcm) => {
            if (!sendAudioRef.current) return;
            bytesSentRef.current += pcm.byteLength;
            socketRef.current?.sendAudio(pcm);
          },
          onLevel: setLevel,
        }, options.audioProcessing);
        micRef.current = mic;
        try {
          await mic.start();
          // The browser could not capture at 16 kHz (Firefox): the server is told the rate it gets.
          if (mic.sampleRate !== config.input_sample_rate) {
            socketRef.current?.configure({ ...config, input_sample_rate: mic.sampleRate });
          }
        } catch (error) {
          micRef.current = null;
          mic.stop();
          const message = error instanceof Error ? error.message : String(error);
          dispatch({
            type: 'error',
            code: 'microphone_unavailable',
            message: `Microphone unavailable (${message}). You can still type.`,
          });
        }
      };

      const onEvent = (event: ServerEvent) => {
        if (event.type === 'ready' && !readyRef.current) {
          readyRef.current = true;
          playerRef.current = new PcmPlayer(context, event.output_sample_rate, {
            onIdle: () => dispatch({ type: 'playback-idle' }),
          });
          void startMicrophone();
        } else if (event.type === 'interrupted') {
          playerRef.current?.stop();
        } else if (event.type === 'playback') {
          if (event.state === 'paused') playerRef.current?.pause();
          else playerRef.current?.resume();
        }
        dispatch({ type: 'server', event });
      };

      const socket = new ConversationSocket(client.webSocketUrl(CONVERSATION_PATH), {
        onEvent,
        onAudio: (pcm) => {
          const player = playerRef.current;
          if (!player) return;
          const wasPlaying = player.isPlaying;
          player.enqueue(pcm);
          if (!wasPlaying) dispatch({ type: 'audio-started' });
        },
        onClose: (code, reason) => {
          if (socketRef.current !== socket) return;
          const wasReady = readyRef.current;
          publishStats();
          teardown();
          let message: string | undefined;
          if (!wasReady) {
            message = `Could not open the voice session${reason ? `: ${reason}` : ''} (WebSocket closed with code ${code}). Check the API base URL and key in Settings.`;
          } else if (code !== 1000 && code !== 1005) {
            message = `The voice session ended${reason ? `: ${reason}` : ''} (code ${code}).`;
          }
          dispatch({ type: 'closed', message });
        },
        onProtocolError: (message) => {
          if (message !== 'WebSocket error') dispatch({ type: 'error', code: 'protocol', message });
        },
      });
      socketRef.current = socket;
      socket.open(config);
    },
    [client, publishStats, teardown],
  );

  const disconnect = useCallback(() => {
    const socket = socketRef.current;
    if (!socket) return;
    publishStats();
    socketRef.current = null;
    socket.close();
    teardown();
    dispatch({ type: 'closed' });
  }, [publishStats, teardown]);

  /** Stops the reply now, locally and on the server. */
  const interrupt = useCallback(() => {
    playerRef.current?.stop();
    socketRef.current?.interrupt();
    dispatch({ type: 'interrupt-requested' });
  }, []);

  const sendText = useCallback((text: string) => {
    const trimmed = text.trim();
    const socket = socketRef.current;
    if (!trimmed || !socket?.isOpen) return;
    if (playerRef.current?.isPlaying) playerRef.current.stop();
    socket.sendText(trimmed);
    dispatch({ type: 'typed', text: trimmed });
  }, []);

  /** Push-to-talk: press starts sending the microphone (and barges in on a reply). */
  const startTalking = useCallback(() => {
    if (!pushToTalkRef.current || !socketRef.current?.isOpen) return;
    if (playerRef.current?.isPlaying) interrupt();
    sendAudioRef.current = true;
    setTalking(true);
  }, [interrupt]);

  /** Push-to-talk: release closes the turn. */
  const stopTalking = useCallback(() => {
    if (!pushToTalkRef.current || !sendAudioRef.current) return;
    sendAudioRef.current = false;
    setTalking(false);
    socketRef.current?.endTurn();
    dispatch({ type: 'turn-ended' });
  }, []);

  useEffect(() => {
    if (state.connection !== 'ready') return;
    const timer = window.setInterval(publishStats, STATS_INTERVAL_MS);
    return () => window.clearInterval(timer);
  }, [state.connection, publishStats]);

  // Leave no microphone or socket open when the panel goes away.
  useEffect(
    () => () => {
      const socket = socketRef.current;
      socketRef.current = null;
      socket?.close();
      teardown();
    },
    [teardown],
  );

  return {
    state,
    level,
    talking,
    stats,
    connect,
    disconnect,
    interrupt,
    sendText,
    startTalking,
    stopTalking,
    dismissError: (id: number) => dispatch({ type: 'dismiss-error', id }),
    clear: () => dispatch({ type: 'clear' }),
  };
}
