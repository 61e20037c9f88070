// Where one `playwright test` run keeps what its global set-up made (server logs, the spoken WAVs,
// state.json) and what the tests read of it. Shared by the config, the global set-up (the runner's
// process) and the tests (its worker processes).

import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// playwright.config.ts names the folder once, in the runner's process, before any worker is forked:
// the workers inherit this variable and load the config again with the same folder.
const RUN_DIR_VARIABLE = 'GEMMAVOICE_E2E_RUN_DIR';

export function runDir(): string {
  process.env[RUN_DIR_VARIABLE] ??= join(tmpdir(), `gemmavoice-e2e-${process.pid}-${Date.now()}`);
  return process.env[RUN_DIR_VARIABLE];
}

/** The fake microphone's files: the spoken question after 1 s of silence, and at once (room tests). */
export function spokenWavPath(name: 'question' | 'question-at-once'): string {
  return join(runDir(), `${name}.wav`);
}

export interface Blocked {
  outcome: 'FAIL' | 'SKIP';
  reason: string;
}

/** What the global set-up hands the tests (runDir()/state.json). */
export interface RunState {
  baseUrl: string;
  apiKey: string;
  /** The spoken question without padding, for the upload test. */
  questionWav: string;
  /** Seconds of silence before the question in each fake-microphone file. */
  leads: { question: number; 'question-at-once': number };
  /** The agent worker this run started; null when none was (see roomsBlocked). */
  worker: { healthUrl: string; logPath: string; pid: number } | null;
  /** Why the LiveKit room tests cannot run here, if they cannot: each is then reported so. */
  roomsBlocked: Blocked | null;
  /** The started processes' logs, by name (backend, worker, livekit). */
  logs: Record<string, string>;
}

export function statePath(): string {
  return join(runDir(), 'state.json');
}

export function readState(): RunState {
  return JSON.parse(readFileSync(statePath(), 'utf8')) as RunState;
}

/** The last lines of a log, or '' when there is none. */
export function logTail(path: string | undefined, lines = 40): string {
  if (!path) return '';
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

// The LiveKit room tests' titles: the global set-up starts the LiveKit server and the agent worker only
// when E2E_ONLY selects one of them (or nothing is selected), as the tests' names are matched.
export const ROOM_TESTS = {
  joinHearAnswer:
    'LiveKit room: the agent joins within 3 s, hears the words said while connecting, and answers with audio the page plays',
  threeRooms: "LiveKit room: two rooms at once each get an agent; a third, beyond the worker, gets the page's message",
} as const;

export function selectedByOnly(title: string): boolean {
  const only = process.env.E2E_ONLY;
  return !only || title.includes(only);
}
