import { act, renderHook } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { ApiError } from '../../src/api/errors';
import { useBusyTask } from '../../src/hooks/useBusyTask';

/** A promise to settle from the test. */
function deferred() {
  let resolve!: () => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('useBusyTask', () => {
  it('is busy while the task runs, and not after it succeeds', async () => {
    const { result } = renderHook(() => useBusyTask());
    expect(result.current.busy).toBe(false);
    const task = deferred();
    let running!: Promise<void>;
    act(() => {
      running = result.current.run(() => task.promise);
    });
    expect(result.current.busy).toBe(true);
    await act(async () => {
      task.resolve();
      await running;
    });
    expect(result.current.busy).toBe(false);
    expect(result.current.error).toBeNull();
  });

  it('shows what the task threw, in words, and is no longer busy', async () => {
    const { result } = renderHook(() => useBusyTask());
    await act(() =>
      result.current.run(async () => {
        throw new ApiError(503, 'service_unavailable', 'The model is still loading.');
      }),
    );
    expect(result.current.busy).toBe(false);
    expect(result.current.error).toBe('The model is still loading.');
  });

  it('clears the error when the task is run again', async () => {
    const { result } = renderHook(() => useBusyTask());
    await act(() =>
      result.current.run(async () => {
        throw new Error('first try failed');
      }),
    );
    expect(result.current.error).toBe('first try failed');
    const retry = deferred();
    let running!: Promise<void>;
    act(() => {
      running = result.current.run(() => retry.promise);
    });
    expect(result.current.error).toBeNull();
    expect(result.current.busy).toBe(true);
    await act(async () => {
      retry.resolve();
      await running;
    });
    expect(result.current.error).toBeNull();
  });

  it('setError shows and dismisses an error of the caller', () => {
    const { result } = renderHook(() => useBusyTask());
    act(() => result.current.setError('Microphone unavailable'));
    expect(result.current.error).toBe('Microphone unavailable');
    act(() => result.current.setError(null));
    expect(result.current.error).toBeNull();
  });

  it('cancel aborts the task; its error is not shown', async () => {
    const { result } = renderHook(() => useBusyTask());
    let signal!: AbortSignal;
    let running!: Promise<void>;
    act(() => {
      running = result.current.run(
        (s) =>
          new Promise<void>((_, reject) => {
            signal = s;
            s.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
          }),
      );
    });
    await act(async () => {
      result.current.cancel();
      await running;
    });
    expect(signal.aborted).toBe(true);
    expect(result.current.busy).toBe(false);
    expect(result.current.error).toBeNull();
  });

  it('a new run aborts the one before, whose end no longer counts', async () => {
    const { result } = renderHook(() => useBusyTask());
    const first = deferred();
    const second = deferred();
    let firstSignal!: AbortSignal;
    let firstRun!: Promise<void>;
    let secondRun!: Promise<void>;
    act(() => {
      firstRun = result.current.run((signal) => {
        firstSignal = signal;
        return first.promise;
      });
    });
    act(() => {
      secondRun = result.current.run(() => second.promise);
    });
    expect(firstSignal.aborted).toBe(true);
    await act(async () => {
      first.reject(new Error('stale failure'));
      await firstRun;
    });
    expect(result.current.busy).toBe(true); // the second still runs
    expect(result.current.error).toBeNull();
    await act(async () => {
      second.resolve();
      await secondRun;
    });
    expect(result.current.busy).toBe(false);
  });

  it('aborts the running task on unmount', () => {
    const { result, unmount } = renderHook(() => useBusyTask());
    let signal!: AbortSignal;
    act(() => {
      void result.current.run((s) => {
        signal = s;
        return new Promise<void>(() => {});
      });
    });
    unmount();
    expect(signal.aborted).toBe(true);
  });
});
