// The processes the end-to-end tests run against, started by the global set-up in Playwright's runner
// process (a test worker is replaced after each failure; these must outlive it): a livekit-server on
// loopback, the backend (uvicorn) and the LiveKit agent worker in `start` mode. Each one's output goes
// to <run dir>/<name>.log.

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { logTail, runDir } from './run-dir.ts';

export const frontendDir = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const backendDir = resolve(frontendDir, '../backend');

export interface Started {
  name: string;
  child: ChildProcess;
  logPath: string;
  exited: () => { code: number | null; signal: NodeJS.Signals | null } | null;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolvePort(port));
    });
  });
}

function python(): string {
  const path = process.env.E2E_BACKEND_PYTHON ?? join(backendDir, '.venv/bin/python');
  if (!existsSync(path)) {
    throw new Error(`No backend environment at ${path}: run \`make setup\` (or set E2E_BASE_URL).`);
  }
  return path;
}

/** A backend process, its output in <run dir>/<name>.log. */
export function spawnLogged(name: string, args: string[], extraEnv: Record<string, string> = {}): Started {
  const interpreter = python();
  const logPath = join(runDir(), `${name}.log`);
  const logStream = createWriteStream(logPath);
  const child = spawn(interpreter, args, {
    cwd: backendDir,
    env: { ...process.env, ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.pipe(logStream);
  child.stderr!.pipe(logStream);
  let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  console.log(`started the ${name} (pid ${child.pid}); log: ${logPath}`);
  return { name, child, logPath, exited: () => exited };
}

/** A livekit-server on loopback with keys made for this run; its LIVEKIT_* settings. */
export async function startLiveKit(): Promise<{ process: Started; settings: Record<string, string> }> {
  const envFile = join(runDir(), 'livekit.env');
  const liveKit = spawnLogged('livekit', ['-m', 'app.agents.local_livekit', '--env-file', envFile]);
  const deadline = Date.now() + 30_000;
  while (!existsSync(envFile) || !readFileSync(envFile, 'utf8').includes('LIVEKIT_API_SECRET=')) {
    if (liveKit.exited() || Date.now() > deadline) {
      const how = liveKit.exited() ? `it exited: ${JSON.stringify(liveKit.exited())}` : 'no settings within 30 s';
      await stopProcess(liveKit);
      throw new Error(`the LiveKit server did not start (${how}):\n${logTail(liveKit.logPath, 5)}`);
    }
    await sleep(100);
  }
  const settings = Object.fromEntries(
    readFileSync(envFile, 'utf8')
      .trim()
      .split('\n')
      .map((line) => line.split(/=(.*)/s).slice(0, 2) as [string, string]),
  );
  console.log(`LiveKit server on ${settings.LIVEKIT_URL}`);
  return { process: liveKit, settings };
}

export async function startBackend(
  liveKitSettings: Record<string, string>,
  apiKey: string,
): Promise<{ process: Started; baseUrl: string }> {
  const port = await freePort();
  // The spoken question comes from the backend's voice: without sampling noise it sounds the same every run.
  const backend = spawnLogged('backend', ['-m', 'uvicorn', 'app.main:app', '--host', '127.0.0.1', '--port', String(port)], {
    LOCAL_TTS_VARIATION: '0',
    ...(apiKey ? { API_KEY: apiKey } : {}),
    ...liveKitSettings,
  });
  return { process: backend, baseUrl: `http://127.0.0.1:${port}` };
}

/** The agent worker as users run it: `start`, the project's defaults (two conversations at most). */
export async function startWorker(liveKitSettings: Record<string, string>): Promise<{ process: Started; healthUrl: string }> {
  const healthPort = await freePort();
  const worker = spawnLogged('worker', ['-m', 'app.agents.worker', 'start', '--log-level', 'INFO'], {
    ...liveKitSettings,
    LIVEKIT_WORKER_PORT: String(healthPort),
  });
  return { process: worker, healthUrl: `http://127.0.0.1:${healthPort}/worker` };
}

export async function stopProcess(started: Started | null): Promise<void> {
  if (!started || started.exited()) return;
  started.child.kill('SIGTERM');
  const deadline = Date.now() + 15_000;
  while (!started.exited() && Date.now() < deadline) await sleep(100);
  if (!started.exited()) started.child.kill('SIGKILL');
}

export async function waitReady(baseUrl: string, timeoutMs: number, backend: Started | null): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (backend?.exited()) {
      throw new Error(
        `the backend exited (${JSON.stringify(backend.exited())}) before it was ready:\n${logTail(backend.logPath)}`,
      );
    }
    try {
      const response = await fetch(`${baseUrl}/health/ready`, { signal: AbortSignal.timeout(3000) });
      if (response.ok) return;
      last = `${response.status} ${(await response.text()).slice(0, 300)}`;
    } catch (error) {
      const { cause, message } = error as Error & { cause?: { code?: string } };
      last = String(cause?.code ?? message);
    }
    await sleep(1000);
  }
  throw new Error(`${baseUrl}/health/ready not 200 after ${timeoutMs / 1000} s (last: ${last})`);
}

// ---------------------------------------------------------------- audio for the fake microphone

// The backend tests' question: Whisper heard "spider" and "legs" in every try (backend/tests/helpers.py).
export const SPOKEN_SENTENCE = 'How many legs does a spider have?';

interface Wav {
  audioFormat: number;
  channels: number;
  sampleRate: number;
  bitsPerSample: number;
  data: Buffer;
}

/** Reads a PCM WAV: its format and the raw sample bytes. */
function parseWav(buffer: Buffer): Wav {
  if (buffer.toString('ascii', 0, 4) !== 'RIFF' || buffer.toString('ascii', 8, 12) !== 'WAVE') {
    throw new Error('the text-to-speech answer is not a WAV file');
  }
  let offset = 12;
  let format: Omit<Wav, 'data'> | null = null;
  let data: Buffer | null = null;
  while (offset + 8 <= buffer.length) {
    const id = buffer.toString('ascii', offset, offset + 4);
    let size = buffer.readUInt32LE(offset + 4);
    const body = offset + 8;
    if (id === 'data' && (size === 0 || size === 0xffffffff || body + size > buffer.length)) {
      size = buffer.length - body; // streamed WAVs may carry a placeholder size
    }
    if (id === 'fmt ') {
      format = {
        audioFormat: buffer.readUInt16LE(body),
        channels: buffer.readUInt16LE(body + 2),
        sampleRate: buffer.readUInt32LE(body + 4),
        bitsPerSample: buffer.readUInt16LE(body + 14),
      };
    } else if (id === 'data') {
      data = buffer.subarray(body, body + size);
      break;
    }
    offset = body + size + (size % 2);
  }
  if (!format || !data) throw new Error('WAV without fmt or data chunk');
  if (format.audioFormat !== 1 || format.bitsPerSample !== 16) {
    throw new Error(`expected 16-bit PCM WAV, got format ${format.audioFormat} / ${format.bitsPerSample} bit`);
  }
  return { ...format, data };
}

function wavFile(pcm: Buffer, sampleRate: number, channels: number): Buffer {
  const header = Buffer.alloc(44);
  header.write('RIFF', 0, 'ascii');
  header.writeUInt32LE(36 + pcm.length, 4);
  header.write('WAVE', 8, 'ascii');
  header.write('fmt ', 12, 'ascii');
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(channels, 22);
  header.writeUInt32LE(sampleRate, 24);
  header.writeUInt32LE(sampleRate * channels * 2, 28);
  header.writeUInt16LE(channels * 2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36, 'ascii');
  header.writeUInt32LE(pcm.length, 40);
  return Buffer.concat([header, pcm]);
}

/**
 * Asks the backend to say the sentence once, then writes it as the fake microphone files: for each
 * `lead` (seconds of silence before it; the capture starts as the microphone opens) a file padded
 * with 2.5 s of silence after, so the server's VAD sees the end of the turn, at the path given. The
 * fake capture plays the file once (%noloop), in real time. `plainPath` gets the speech alone.
 */
export async function prepareSpokenWavs(
  baseUrl: string,
  apiKey: string,
  plainPath: string,
  padded: { path: string; lead: number }[],
): Promise<void> {
  const response = await fetch(`${baseUrl}/v1/text-to-speech`, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      Accept: 'audio/wav',
      ...(apiKey ? { Authorization: `Bearer ${apiKey}` } : {}),
    },
    body: JSON.stringify({ text: SPOKEN_SENTENCE, format: 'wav' }),
  });
  if (!response.ok) throw new Error(`text-to-speech answered ${response.status}: ${await response.text()}`);
  const wav = parseWav(Buffer.from(await response.arrayBuffer()));
  const bytesPerSecond = wav.sampleRate * wav.channels * 2;
  const silence = (seconds: number) => Buffer.alloc(Math.round(seconds * wav.sampleRate) * wav.channels * 2);
  writeFileSync(plainPath, wavFile(wav.data, wav.sampleRate, wav.channels));
  for (const { path, lead } of padded) {
    writeFileSync(path, wavFile(Buffer.concat([silence(lead), wav.data, silence(2.5)]), wav.sampleRate, wav.channels));
  }
  const speechSeconds = wav.data.length / bytesPerSecond;
  console.log(`spoken question: ${speechSeconds.toFixed(2)} s of speech at ${wav.sampleRate} Hz -> ${padded.map((p) => p.path).join(', ')}`);
}
