import { act, renderHook } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { AGENT_JOIN_TIMEOUT_MS, useAgentArrival } from '../../src/hooks/agentArrival';

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

function arrival(initial: string, timeoutMs?: number) {
  return renderHook(({ state }) => useAgentArrival(state, timeoutMs), { initialProps: { state: initial } });
}

describe('useAgentArrival', () => {
  it('gives up on an agent that never joins after the timeout, with a readable reason', () => {
    const { result } = arrival('connecting');
    act(() => vi.advanceTimersByTime(AGENT_JOIN_TIMEOUT_MS - 100));
    expect(result.current.problem).toBeNull();
    act(() => vi.advanceTimersByTime(200));
    expect(result.current.problem).toMatch(/^No agent joined within 20 seconds\./);
    expect(result.current.problem).toMatch(/Try again in a new room/);
  });

  it('counts the whole wait, through pre-connect buffering and initializing', () => {
    const { result, rerender } = arrival('connecting', 1000);
    act(() => vi.advanceTimersByTime(600));
    rerender({ state: 'pre-connect-buffering' });
    act(() => vi.advanceTimersByTime(300));
    rerender({ state: 'initializing' });
    expect(result.current.problem).toBeNull();
    act(() => vi.advanceTimersByTime(200));
    expect(result.current.problem).toMatch(/^No agent joined within 1 second/);
  });

  it('is content once the agent listens, however long the conversation goes on', () => {
    const { result, rerender } = arrival('connecting', 1000);
    act(() => vi.advanceTimersByTime(500));
    rerender({ state: 'listening' });
    act(() => vi.advanceTimersByTime(60_000));
    rerender({ state: 'speaking' });
    act(() => vi.advanceTimersByTime(60_000));
    expect(result.current.problem).toBeNull();
  });

  it('notices an agent that left and did not come back', () => {
    const { result, rerender } = arrival('listening', 1000);
    rerender({ state: 'connecting' });
    act(() => vi.advanceTimersByTime(1100));
    expect(result.current.problem).toBe('The agent left the conversation and did not come back within 1 second.');
  });

  it('says the assistant is reconnecting while an agent that had joined is away, and stops when it is back', () => {
    const { result, rerender } = arrival('listening', 20_000);
    expect(result.current.reconnecting).toBe(false);
    rerender({ state: 'connecting' });
    expect(result.current).toEqual({ problem: null, reconnecting: true });
    act(() => vi.advanceTimersByTime(3000));
    rerender({ state: 'initializing' });
    expect(result.current).toEqual({ problem: null, reconnecting: true });
    rerender({ state: 'listening' });
    expect(result.current).toEqual({ problem: null, reconnecting: false });
  });

  it('is not reconnecting before the first agent came', () => {
    const { result } = arrival('connecting', 1000);
    expect(result.current).toEqual({ problem: null, reconnecting: false });
  });

  it("shows the agent's failed state at once", () => {
    const { result } = arrival('failed');
    expect(result.current.problem).toMatch(/^The agent failed to start/);
  });
});
