import { useEffect, useRef, useState } from 'react';

/**
 * How long a LiveKit room waits for the agent before the page gives up. Dispatch normally takes a
 * second or two, and the server's room keeper sends another agent within a few seconds when one dies
 * or when no worker had room as the room started; a room that got none by now is not likely to.
 */
export const AGENT_JOIN_TIMEOUT_MS = 20_000;

/** The states (of useVoiceAssistant) in which the agent has not joined, or not finished starting. */
const WAITING = new Set(['connecting', 'pre-connect-buffering', 'initializing']);

export interface AgentArrival {
  /** Why the conversation cannot go on without a new room, or null while it can. */
  problem: string | null;
  /** The agent was here and is gone, and another is on its way (the conversation is kept). */
  reconnecting: boolean;
}

/**
 * Whether the agent is here: `problem` once it failed, or did not join (or come back) within
 * `timeoutMs`; `reconnecting` while one that had joined is away (a worker died: the server sends
 * another into the same room, with the conversation so far).
 */
export function useAgentArrival(state: string, timeoutMs: number = AGENT_JOIN_TIMEOUT_MS): AgentArrival {
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
    return { problem: 'The agent failed to start in this room. Try again: a new room gets a new agent.', reconnecting: false };
  }
  if (!waiting || !timedOut) return { problem: null, reconnecting: waiting && joined.current };
  if (joined.current) {
    return { problem: `The agent left the conversation and did not come back ${within}.`, reconnecting: false };
  }
  return {
    problem:
      `No agent joined ${within}. The agent worker may be stopped, still loading its ` +
      'models, or busy with other conversations. Try again in a new room.',
    reconnecting: false,
  };
}
