// Browser end-to-end tests of the web client against the real GemmaVoice backend (e2e/README: see
// frontend/README.md, "End-to-end tests"). e2e/global-setup.ts starts the servers once for the run;
// the tests run one at a time in Debian's Chromium with a fake microphone that plays the question
// the backend itself said.

import { defineConfig, type LaunchOptions } from '@playwright/test';

import { spokenWavPath } from './e2e/support/run-dir.ts';

const env = process.env;

/** Chromium as run.mjs launched it, its fake microphone playing `wav` once from when it opens. */
function chromium(wav: 'question' | 'question-at-once'): LaunchOptions {
  return {
    executablePath: env.E2E_CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${spokenWavPath(wav)}%noloop`,
      '--autoplay-policy=no-user-gesture-required',
    ],
  };
}

export default defineConfig({
  testDir: './e2e',
  globalSetup: './e2e/global-setup.ts',
  // One test at a time, in the order written: two CPU cores, real models, one agent worker of two slots.
  workers: 1,
  fullyParallel: false,
  // A test that fails fails: nothing is retried.
  retries: 0,
  // The slowest waits add up to about 4 minutes (a spoken turn on a busy CPU); each has its own limit.
  timeout: 5 * 60_000,
  forbidOnly: true,
  reporter: [['list'], ['./e2e/support/summary-reporter.ts']],
  use: {
    browserName: 'chromium',
    headless: env.E2E_HEADFUL !== '1',
    viewport: { width: 1180, height: 860 },
    permissions: ['microphone'],
    // A failed test leaves its pages' screenshots in test-results/.
    screenshot: 'only-on-failure',
  },
  // Run in this order (no dependencies between them: the room tests run even when a tab test failed).
  projects: [
    // The WebSocket turn's microphone: a second of silence, then the question.
    { name: 'app', testMatch: 'app.spec.ts', use: { launchOptions: chromium('question') } },
    // The room tests' microphone: the question at once, while the page is still connecting.
    { name: 'rooms', testMatch: 'rooms.spec.ts', use: { launchOptions: chromium('question-at-once') } },
  ],
});
