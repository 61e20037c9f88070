// The tests' fixtures: what the global set-up started (`run`), the app opened on a tab with the API key
// typed into Settings (`openApp`), LiveKit rooms started from the Voice chat tab (`rooms`), and, for every
// test, the checks and reports run.mjs made: E2E_ONLY, uncaught page errors fail the test, and a failed
// test carries the servers' log tails and the browser console's errors.

import { test as base, expect, type BrowserContext, type Page, type TestInfo } from '@playwright/test';
import { join } from 'node:path';

import { type RunState, logTail, readState, selectedByOnly } from './run-dir.ts';

export { expect };

declare global {
  interface Window {
    __outputUpdates: number;
    __peerConnections: RTCPeerConnection[];
    __agentStates: { state: string; at: number }[];
  }
}

export const screenshotDir = join(import.meta.dirname, '..', 'screenshots');

export async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(screenshotDir, `${name}.png`), fullPage: true });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A conversation started in a LiveKit room: its page, its console, and when Start conversation was clicked. */
export interface Room {
  page: Page;
  clientLog: string[];
  clickedAt: number;
}

interface TestFixtures {
  /** Opens the app on a tab (in the test's page), typing the API key into Settings when there is one. */
  openApp: (tab: string) => Promise<Page>;
  /** Starts a conversation in a LiveKit room in a new page; every page it opened is closed after the test. */
  startRoom: (name: string) => Promise<Room>;
  /**
   * The agent worker of the room tests, available (or the test is reported as run.roomsBlocked says);
   * after the test, once its pages are closed, it must have no conversation left.
   */
  agentWorker: AgentWorker;
  /** Uncaught errors of the test's pages, and the browser console's errors. */
  pageErrors: string[];
  consoleErrors: string[];
  /** E2E_ONLY, the uncaught-error check and the failure attachments (automatic). */
  checks: void;
}

export interface AgentWorker {
  /** The worker's load as its health endpoint reports it (0.35 a conversation: two at most). */
  load: () => Promise<number>;
  /** Waits until the worker has no conversation. */
  waitIdle: (timeoutMs?: number) => Promise<void>;
}

interface WorkerFixtures {
  run: RunState;
}

// What a page is called in the errors: the room's name for a room's page, else its tab (URL hash).
const pageNames = new WeakMap<Page, string>();

/** Collects every page's uncaught errors and console errors as the context opens them. */
function watchErrors(context: BrowserContext, pageErrors: string[], consoleErrors: string[]): void {
  context.on('page', (page) => {
    const where = () => pageNames.get(page) ?? (new URL(page.url()).hash.slice(1) || page.url());
    page.on('pageerror', (error) => pageErrors.push(`${where()}: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(`${where()}: ${message.text()}`);
    });
  });
}

async function attachLogs(testInfo: TestInfo, run: RunState, consoleErrors: string[]): Promise<void> {
  for (const [name, path] of Object.entries(run.logs)) {
    const tail = logTail(path);
    if (tail) await testInfo.attach(`${name} log (tail)`, { body: tail, contentType: 'text/plain' });
  }
  if (consoleErrors.length) {
    await testInfo.attach('browser console errors', { body: consoleErrors.join('\n'), contentType: 'text/plain' });
  }
}

export const test = base.extend<TestFixtures, WorkerFixtures>({
  run: [async ({}, use) => use(readState()), { scope: 'worker' }],

  pageErrors: async ({}, use) => use([]),
  consoleErrors: async ({}, use) => use([]),

  checks: [
    async ({ run, pageErrors, consoleErrors }, use, testInfo) => {
      test.skip(!selectedByOnly(testInfo.title), `not selected by E2E_ONLY=${JSON.stringify(process.env.E2E_ONLY)}`);
      await use();
      const passed = testInfo.status === testInfo.expectedStatus;
      if (testInfo.status !== 'skipped' && (!passed || pageErrors.length)) await attachLogs(testInfo, run, consoleErrors);
      // (After a failure the test's own error is the one to read; these would only add to it.)
      if (passed) expect(pageErrors, `uncaught errors in the page:\n  ${pageErrors.join('\n  ')}`).toEqual([]);
    },
    { auto: true },
  ],

  context: async ({ context, pageErrors, consoleErrors }, use) => {
    watchErrors(context, pageErrors, consoleErrors);
    await use(context);
  },

  openApp: async ({ page, run }, use) => {
    await use(async (tab) => {
      await page.goto(`${run.baseUrl}/#${tab}`);
      await page.getByRole('tab', { selected: true }).waitFor();
      if (run.apiKey) {
        await page.getByRole('button', { name: 'Settings' }).click();
        await page.getByLabel('API key').fill(run.apiKey);
        await page.getByRole('button', { name: 'Save' }).click();
        await page.getByRole('button', { name: 'Close settings' }).click();
      }
      return page;
    });
  },

  agentWorker: async ({ run }, use) => {
    const blocked = run.roomsBlocked;
    test.skip(blocked?.outcome === 'SKIP', `not run: ${blocked?.reason}`);
    if (blocked || !run.worker) throw new Error(`not run: ${blocked?.reason ?? 'no agent worker was started'}`);
    const { healthUrl, logPath, pid } = run.worker;
    await waitWorkerAvailable(logPath, pid);
    const load = async () => {
      const info = (await (await fetch(healthUrl, { signal: AbortSignal.timeout(3000) })).json()) as { worker_load?: number };
      return info.worker_load ?? 0; // (its JSON leaves out a zero)
    };
    const waitIdle = async (timeoutMs = 15_000) => {
      const deadline = Date.now() + timeoutMs;
      while ((await load()) !== 0) {
        if (Date.now() > deadline) {
          throw new Error(`the worker still has a conversation ${timeoutMs / 1000} s after every page left`);
        }
        await sleep(200);
      }
    };
    await use({ load, waitIdle });
    await waitIdle();
  },

  // (agentWorker first: a room test that is not to run stops before the browser starts.)
  startRoom: async ({ agentWorker, context, run }, use) => {
    void agentWorker;
    const pages: Page[] = [];
    await use(async (name) => {
      const page = await context.newPage();
      pages.push(page);
      pageNames.set(page, name);
      await watchRoom(page);
      const clientLog: string[] = [];
      page.on('console', (message) => clientLog.push(message.text()));
      await page.goto(`${run.baseUrl}/#voice`);
      await page.getByRole('radio', { name: 'LiveKit' }).click();
      await page.getByRole('button', { name: 'Start conversation' }).click();
      const clickedAt = await page.evaluate(() => performance.now());
      return { page, clientLog, clickedAt };
    });
    // Closed whatever the outcome: an open page keeps its agent.
    for (const page of pages) await page.close().catch(() => undefined);
  },
});

/** Waits until the worker has told the LiveKit server it takes jobs (it does so every 2.5 s). */
async function waitWorkerAvailable(logPath: string, pid: number, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!logTail(logPath, Infinity).includes('marking as available')) {
    if (!alive(pid) || Date.now() > deadline) {
      throw new Error(`the agent worker is not available${alive(pid) ? '' : ' (it exited)'}:\n${logTail(logPath)}`);
    }
    await sleep(200);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Keeps the page's peer connections (window.__peerConnections) and its agent states with their times. */
async function watchRoom(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    window.__peerConnections = [];
    window.RTCPeerConnection = class extends Native {
      constructor(...args: ConstructorParameters<typeof RTCPeerConnection>) {
        super(...args);
        window.__peerConnections.push(this);
      }
    };
    window.__agentStates = [];
    new MutationObserver(() => {
      const state = document.querySelector<HTMLElement>('[data-testid="livekit-agent-state"]')?.dataset.state;
      const seen = window.__agentStates;
      if (state && seen.at(-1)?.state !== state) seen.push({ state, at: performance.now() });
    }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'] });
  });
}
