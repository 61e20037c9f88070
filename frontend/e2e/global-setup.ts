// Starts what the end-to-end tests run against, in Playwright's runner process, and returns the
// teardown that stops it (Playwright calls it after the last test, or when the run is interrupted).
//
// Without E2E_BASE_URL: a livekit-server on loopback (python -m app.agents.local_livekit: the binary
// `make livekit-server` builds), the backend (uvicorn, project defaults) and the LiveKit agent worker in
// `start` mode; only the backend when E2E_ONLY selects no LiveKit room test. A LiveKit server that does
// not start does not stop the run: the other tests still run and each room test FAILs with the reason
// (`make test` builds the server, so a missing one is a broken set-up, not a skip). With E2E_BASE_URL,
// that server as it is, and the room tests SKIP (they need the worker this run starts).
//
// Then waits for /health/ready, has the backend say the question the microphone tests speak, and
// writes state.json for the tests. Anything here that fails fails the whole run.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import {
  type Blocked,
  ROOM_TESTS,
  type RunState,
  runDir,
  selectedByOnly,
  spokenWavPath,
  statePath,
  logTail,
} from './support/run-dir.ts';
import {
  frontendDir,
  prepareSpokenWavs,
  type Started,
  startBackend,
  startLiveKit,
  startWorker,
  stopProcess,
  waitReady,
} from './support/servers.ts';

// Seconds of silence before the spoken question in each fake-microphone file: the WebSocket test's
// microphone gets a second; in the room tests the user talks at once, so what they say before the agent
// has joined is the pre-connect audio.
const LEADS = { question: 1, 'question-at-once': 0 } as const;

function ensureWebClientBuilt(): void {
  if (existsSync(join(frontendDir, 'dist/index.html'))) return;
  console.log('frontend/dist is missing: building the web client');
  const result = spawnSync('npm', ['run', 'build'], { cwd: frontendDir, stdio: 'inherit' });
  if (result.status !== 0) throw new Error('npm run build failed');
}

export default async function globalSetup(): Promise<() => Promise<void>> {
  const env = process.env;
  const apiKey = env.E2E_API_KEY ?? env.API_KEY ?? '';
  const readyTimeoutMs = Number(env.E2E_READY_TIMEOUT_S ?? 120) * 1000;
  const dir = runDir();
  mkdirSync(dir, { recursive: true });

  const started: Started[] = [];
  const stopAll = async () => {
    // The worker first: it leaves its rooms while the server is still there.
    for (const name of ['worker', 'backend', 'livekit']) {
      await stopProcess(started.find((proc) => proc.name === name) ?? null);
    }
  };
  // Ctrl-C reaches the children in the same process group; a SIGTERM to the runner alone must too.
  const onSigterm = () => {
    for (const { child } of started) child.kill('SIGTERM');
    process.exit(143);
  };
  process.once('SIGTERM', onSigterm);
  const teardown = async () => {
    process.off('SIGTERM', onSigterm);
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    let baseUrl = env.E2E_BASE_URL?.replace(/\/+$/, '');
    let worker: RunState['worker'] = null;
    let roomsBlocked: Blocked | null = null;
    let backend: Started | null = null;
    if (baseUrl) {
      roomsBlocked = {
        outcome: 'SKIP',
        reason: 'E2E_BASE_URL points at a backend whose agent worker this run does not start',
      };
    } else {
      ensureWebClientBuilt();
      let liveKitSettings: Record<string, string> | null = null;
      if (Object.values(ROOM_TESTS).some(selectedByOnly)) {
        try {
          const liveKit = await startLiveKit();
          started.push(liveKit.process);
          liveKitSettings = liveKit.settings;
        } catch (error) {
          roomsBlocked = {
            outcome: 'FAIL',
            reason: `${(error as Error).message.trim()}; \`make livekit-server\` builds it`,
          };
        }
      } else {
        roomsBlocked = { outcome: 'SKIP', reason: 'no LiveKit room test is selected by E2E_ONLY' };
      }
      const startedBackend = await startBackend(liveKitSettings ?? {}, apiKey);
      backend = startedBackend.process;
      started.push(backend);
      baseUrl = startedBackend.baseUrl;
      if (liveKitSettings) {
        const startedWorker = await startWorker(liveKitSettings);
        started.push(startedWorker.process);
        worker = {
          healthUrl: startedWorker.healthUrl,
          logPath: startedWorker.process.logPath,
          pid: startedWorker.process.child.pid!,
        };
      }
    }
    console.log(`waiting for ${baseUrl}/health/ready (up to ${readyTimeoutMs / 1000} s)`);
    await waitReady(baseUrl, readyTimeoutMs, backend);
    const questionWav = join(dir, 'question-speech.wav');
    await prepareSpokenWavs(baseUrl, apiKey, questionWav, [
      { path: spokenWavPath('question'), lead: LEADS.question },
      { path: spokenWavPath('question-at-once'), lead: LEADS['question-at-once'] },
    ]);
    const state: RunState = {
      baseUrl,
      apiKey,
      questionWav,
      leads: LEADS,
      worker,
      roomsBlocked,
      logs: Object.fromEntries(started.map((proc) => [proc.name, proc.logPath])),
    };
    writeFileSync(statePath(), JSON.stringify(state, null, 2));
  } catch (error) {
    for (const proc of started) {
      console.log(`--- ${proc.name} log (tail) ---\n${logTail(proc.logPath)}\n---`);
    }
    await teardown();
    throw error;
  }
  return teardown;
}
