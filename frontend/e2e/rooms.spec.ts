// The Voice chat tab through a real LiveKit room: the livekit-server, the backend and the agent worker the
// global set-up started. The fake microphone says the question at once (playwright.config.ts): what the
// user says before the agent has joined reaches it only through livekit-client's pre-connect buffer.
// Each test's pages are closed after it, whatever its outcome, and the worker must then be idle
// (the agentWorker fixture).

import type { Page } from '@playwright/test';

import { ROOM_TESTS } from './support/run-dir.ts';
import { type Room, expect, screenshot, sleep, test } from './support/fixtures.ts';

// Whisper heard "spider" and "legs" in every try (backend/tests/helpers.py).
const QUESTION_WORDS = [/spider/i, /legs/i];

const WAITING_STATES = ['connecting', 'pre-connect-buffering', 'initializing', 'disconnected'];

/** The agent's audio as the page received and plays it: decoded energy (WebRTC stats) and playing elements. */
function agentAudio(page: Page): Promise<{ energy: number; samples: number; playing: number }> {
  return page.evaluate(async () => {
    let energy = 0;
    let samples = 0;
    for (const pc of window.__peerConnections) {
      (await pc.getStats()).forEach((report) => {
        if (report.type === 'inbound-rtp' && report.kind === 'audio') {
          energy += report.totalAudioEnergy ?? 0;
          samples += report.totalSamplesReceived ?? 0;
        }
      });
    }
    const playing = [...document.querySelectorAll('audio')].filter(
      (element) =>
        !element.paused &&
        element.currentTime > 0 &&
        (element.srcObject as MediaStream | null)?.getAudioTracks().some((t) => t.readyState === 'live'),
    ).length;
    return { energy, samples, playing };
  });
}

/** Milliseconds from the click on Start conversation until the agent had joined and started. */
async function agentArrival(room: Room, timeoutMs: number): Promise<{ ms: number; states: string[] }> {
  await room.page.waitForFunction(
    (waiting) => {
      const state = document.querySelector<HTMLElement>('[data-testid="livekit-agent-state"]')?.dataset.state;
      return state && !waiting.includes(state);
    },
    WAITING_STATES,
    { timeout: timeoutMs, polling: 50 },
  );
  const states = await room.page.evaluate(() => window.__agentStates);
  const arrived = states.find((entry) => !WAITING_STATES.includes(entry.state))!;
  return { ms: arrived.at - room.clickedAt, states: states.map((entry) => entry.state) };
}

test(ROOM_TESTS.joinHearAnswer, async ({ startRoom, agentWorker, run }) => {
  const room = await startRoom('livekit');
  const { page, clientLog } = room;
  const arrival = await agentArrival(room, 10_000);
  console.log(`    the agent joined ${arrival.ms.toFixed(0)} ms after the click (states: ${arrival.states.join(' -> ')})`);
  expect(arrival.ms, `the agent joined ${arrival.ms.toFixed(0)} ms after the click, over 3 s`).toBeLessThanOrEqual(3000);
  // The microphone opens with the click and the voice starts with it: words said before the agent was
  // there (and subscribed to the microphone) reach it only through livekit-client's pre-connect buffer.
  const speechStartMs = run.leads['question-at-once'] * 1000;
  expect(
    clientLog.some((line) => line.includes('starting preconnect buffer for microphone')),
    'livekit-client never started the pre-connect buffer',
  ).toBe(true);
  expect(
    arrival.ms,
    `the agent was there ${arrival.ms.toFixed(0)} ms after the click, before the user's first word ended: the pre-connect buffer went untested`,
  ).toBeGreaterThan(speechStartMs + 250);

  const finalUser = page.locator('[data-testid="transcript-user"][data-final="true"]').first();
  await finalUser.waitFor({ timeout: 30_000 });
  const heard = (await finalUser.locator('.bubble-text').innerText()).trim();
  const firstWords = [/\bhow\b/i, /\bmany\b/i];
  const missing = [...firstWords, ...QUESTION_WORDS].filter((word) => !word.test(heard));
  expect(missing, `the agent heard ${JSON.stringify(heard)}, without ${missing.join(' and ')}`).toEqual([]);

  const reply = page.locator('[data-testid="assistant-message"]').first();
  await reply.waitFor({ timeout: 30_000 });
  const deadline = Date.now() + 30_000;
  let audio = await agentAudio(page);
  while (!(audio.energy > 0.001 && audio.playing > 0)) {
    expect(Date.now() < deadline, `no agent audio played: ${JSON.stringify(audio)}`).toBe(true);
    await sleep(250);
    audio = await agentAudio(page);
  }
  const replyText = (await reply.locator('.bubble-text').innerText()).trim();
  expect(replyText.replace('…', '').length, 'the reply has no text').toBeGreaterThan(0);
  await sleep(1500);
  await screenshot(page, 'voice-chat-livekit');
  const errors = await page.getByRole('alert').allInnerTexts();
  expect(errors, `errors shown: ${errors.join(' | ')}`).toEqual([]);
  console.log(`    heard ${JSON.stringify(heard)}; replied ${JSON.stringify(replyText.slice(0, 80))}`);
  console.log(`    agent audio: energy ${audio.energy.toFixed(3)} over ${audio.samples} samples, ${audio.playing} element(s) playing`);

  // Leaving ends the agent's job: the worker's slot is free again.
  await page.getByRole('button', { name: 'Disconnect' }).click();
  await page.getByRole('button', { name: 'Start conversation' }).waitFor({ timeout: 10_000 });
  await agentWorker.waitIdle();
});

test(ROOM_TESTS.threeRooms, async ({ startRoom, agentWorker }) => {
  const rooms = [await startRoom('room-1'), await startRoom('room-2')];
  for (const room of rooms) await agentArrival(room, 10_000);
  // Both slots are busy; the worker tells the LiveKit server so within its 2.5 s status period.
  await sleep(3000);
  const load = await agentWorker.load();
  expect(load, `the worker with two conversations reports load ${load}`).toBeGreaterThanOrEqual(0.7);
  const third = await startRoom('room-3');
  const missing = third.page.getByTestId('livekit-agent-missing');
  await missing.waitFor({ timeout: 40_000 });
  const text = await missing.innerText();
  expect(text, `unexpected message: ${text}`).toMatch(/No agent joined within \d+ seconds/);
  await third.page.getByRole('button', { name: 'Try again in a new room' }).waitFor();
  await screenshot(third.page, 'voice-chat-livekit-no-agent');
  for (const [index, room] of rooms.entries()) {
    const state = await room.page.getByTestId('livekit-agent-state').getAttribute('data-state');
    expect(WAITING_STATES.includes(state ?? ''), `room ${index + 1} lost its agent: ${state}`).toBe(false);
    await room.page.getByRole('button', { name: 'Disconnect' }).click();
  }
  await agentWorker.waitIdle();
});
