import { useCallback, useEffect, useRef, useState } from 'react';
import { describeError } from '../api/errors';

export interface BusyTask {
  /** A task is running. */
  busy: boolean;
  /** What the last task threw, in words; null when it succeeded or the error was dismissed. */
  error: string | null;
  /** Shows an error of the panel's own (or null to dismiss it). */
  setError: (message: string | null) => void;
  /**
   * Runs `task`: `busy` while it runs, its error (unless it was cancelled) in `error`. The error
   * shown before is cleared when it starts. A new run cancels the one before it: `signal` is
   * aborted, and what the old run throws or how it ends no longer counts.
   */
  run: (task: (signal: AbortSignal) => Promise<void>) => Promise<void>;
  /** Aborts the running task, if any (it also is when the component unmounts). */
  cancel: () => void;
}

/** A request run from a panel's button: its busy flag, its error message, and its cancelling. */
export function useBusyTask(): BusyTask {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const running = useRef<AbortController | null>(null);

  const cancel = useCallback(() => running.current?.abort(), []);

  const run = useCallback(async (task: (signal: AbortSignal) => Promise<void>) => {
    running.current?.abort();
    const controller = new AbortController();
    running.current = controller;
    setBusy(true);
    setError(null);
    try {
      await task(controller.signal);
    } catch (err) {
      if (!controller.signal.aborted) setError(describeError(err));
    } finally {
      if (running.current === controller) {
        running.current = null;
        setBusy(false);
      }
    }
  }, []);

  useEffect(() => () => running.current?.abort(), []);

  return { busy, error, setError, run, cancel };
}
