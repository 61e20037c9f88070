import { useEffect, useRef, useState } from 'react';

/**
 * How long a LiveKit room waits for the agent before the page gives up. Dispatch normally takes a
 * second or two; LiveKit sends a room to an agent worker only once, when the room starts, so a room
 * that got no agent by now will not get one, and trying again in a new room is the way out.
 */
export const AGENT_JOIN_TIMEOUT_MS = 20_000;

/** The states (of useVoiceAssistant) in which the agent has not joined, or not finished starting. */
const WAITING = new Set(['connecting', 'pre-connect-buffering', 'initializing']);

/**
 * Why the conversation cannot go on without a new room, or null while it can: the agent failed, or
 * did not join (or come back) within `timeoutMs`.
 */
export function useAgentArrival(state: string, timeoutMs: number = AGENT_JOIN_TIMEOUT_MS): string | null {
  const waiting = WAITING.has(state);
  const [timedOut, setTimedOut] = useState(false);
  const joined = useRef(false);
  if (!waiting && state !== 'disconnected' && state !== 'failed') joined.current = true;

  useEffect(() => {
    setTimedOut(false);
    if (!waiting) return undefined;
    const timer = setTimeout(() => setTimedOut(true), timeoutMs);
    return () => clearTimeout(timer);
  }, [waiting, timeoutMs]);

  const seconds = Math.round(timeoutMs / 1000);
  const within = `within ${seconds} second${seconds === 1 ? '' : 's'}`;
  if (state === 'failed') {
    return 'The agent failed to start in this room. Try again: a new room gets a new agent.';
  }
  if (!waiting || !timedOut) return null;
  if (joined.current) {
    return `The agent left the conversation and did not come back ${within}.`;
  }
  return (
    `No agent joined ${within}. The agent worker may be stopped, still loading its ` +
    'models, or busy with other conversations. LiveKit asks a worker only once, when the room starts, ' +
    'so trying again opens a new room.'
  );
}
