// The web client's tabs against the real backend: rendering, streamed generation, speech synthesis,
// transcription of an upload, and a spoken voice-chat turn over the WebSocket through the fake
// microphone (the question the backend said, after a second of silence: see playwright.config.ts).

import { readFileSync } from 'node:fs';

import { expect, screenshot, sleep, test } from './support/fixtures.ts';

// Whisper heard "spider" and "legs" in every try (backend/tests/helpers.py).
const QUESTION_WORDS = [/spider/i, /legs/i];

test('every tab renders (screenshots in e2e/screenshots/)', async ({ openApp }) => {
  const page = await openApp('generate');
  await page.getByText('Server ready').waitFor({ timeout: 20_000 });
  const tabs = [
    ['generate', 'Text generation'],
    ['stt', 'Speech-to-text'],
    ['tts', 'Text-to-speech'],
    ['voice', 'Voice chat'],
  ];
  for (const [id, label] of tabs) {
    await page.getByRole('tab', { name: label }).click();
    await page.getByRole('tabpanel').getByRole('heading', { name: label, level: 2 }).waitFor();
    await screenshot(page, `tab-${id}`);
  }
  await page.getByRole('button', { name: 'Settings' }).click();
  await page.getByRole('form', { name: 'Settings' }).waitFor();
  await screenshot(page, 'settings');
});

test('text generation streams tokens', async ({ openApp }) => {
  const page = await openApp('generate');
  const output = page.getByTestId('generation-output');
  // Count how many times the output changes: a streamed reply changes it token by token.
  await output.evaluate((node) => {
    window.__outputUpdates = 0;
    new MutationObserver(() => (window.__outputUpdates += 1)).observe(node, {
      childList: true,
      subtree: true,
      characterData: true,
    });
  });
  await page.getByRole('textbox', { name: 'Prompt', exact: true }).fill('Name three colours of the rainbow.');
  // A short reply keeps the test quick on a busy CPU; streaming shows after a few tokens.
  await page.getByText('Options', { exact: true }).click();
  await page.getByRole('spinbutton', { name: 'Max tokens' }).fill('32');
  await page.getByRole('button', { name: 'Generate' }).click();
  await page.getByTestId('generation-usage').waitFor({ timeout: 120_000 });
  const text = (await output.innerText()).trim();
  const updates = await page.evaluate(() => window.__outputUpdates);
  expect(text.length > 0 && text !== 'The reply streams here.', 'no generated text').toBe(true);
  expect(updates, `output changed only ${updates} time(s): not streamed`).toBeGreaterThanOrEqual(3);
  expect(await page.getByRole('alert').count(), 'an error is shown').toBe(0);
  await screenshot(page, 'generate-result');
  console.log(`    generated ${text.length} chars in ${updates} updates: ${JSON.stringify(text.slice(0, 80))}`);
});

test('text-to-speech produces playable audio', async ({ openApp }) => {
  const page = await openApp('tts');
  await page.getByRole('textbox', { name: 'Text', exact: true }).fill('The quick brown fox jumps over the lazy dog.');
  await page.getByRole('button', { name: 'Speak' }).click();
  const audio = page.getByTestId('tts-audio');
  await audio.waitFor({ timeout: 60_000 });
  const played = await audio.evaluate(async (element: HTMLAudioElement) => {
    if (element.readyState < 1) {
      await new Promise((ok, fail) => {
        element.addEventListener('loadedmetadata', ok, { once: true });
        element.addEventListener('error', () => fail(new Error('audio element error')), { once: true });
      });
    }
    element.currentTime = 0;
    await element.play();
    await new Promise((ok) => setTimeout(ok, 600));
    return { duration: element.duration, currentTime: element.currentTime, error: element.error?.code ?? null };
  });
  expect(played.error, `the audio element failed to decode (code ${played.error})`).toBeNull();
  expect(played.duration, `audio too short: ${played.duration} s`).toBeGreaterThan(1);
  expect(played.currentTime, `audio did not play (currentTime ${played.currentTime})`).toBeGreaterThan(0.2);
  const href = await page.getByRole('link', { name: 'Download WAV' }).getAttribute('href');
  expect(href?.startsWith('blob:'), 'no download link').toBe(true);
  await screenshot(page, 'tts-result');
  console.log(`    ${played.duration.toFixed(2)} s of audio; played to ${played.currentTime.toFixed(2)} s`);
});

test('speech-to-text transcribes an uploaded WAV', async ({ openApp, run }) => {
  const page = await openApp('stt');
  await page.getByLabel('Audio file').setInputFiles({
    name: 'question.wav',
    mimeType: 'audio/wav',
    buffer: readFileSync(run.questionWav),
  });
  await page.getByRole('button', { name: 'Transcribe' }).click();
  const result = page.getByTestId('stt-result');
  await result.waitFor({ timeout: 60_000 });
  const text = await result.innerText();
  expect(QUESTION_WORDS.every((word) => word.test(text)), `transcript lacks the question: ${JSON.stringify(text)}`).toBe(true);
  expect(text, 'no language shown').toMatch(/Language: \w+/);
  await screenshot(page, 'stt-result');
});

test('voice chat over WebSocket: spoken question -> transcript, reply text and reply audio', async ({ openApp }) => {
  const page = await openApp('voice');
  await page.getByRole('radio', { name: 'WebSocket' }).click();
  await page.getByRole('button', { name: 'Connect' }).click();
  await page.getByTestId('agent-state').and(page.locator('[data-state="listening"]')).waitFor({ timeout: 20_000 });

  const finalUser = page.locator('[data-testid="transcript-user"][data-final="true"]').first();
  await finalUser.waitFor({ timeout: 60_000 });
  const heard = (await finalUser.locator('.bubble-text').innerText()).trim();
  const missing = QUESTION_WORDS.filter((word) => !word.test(heard));
  expect(missing, `user transcript lacks ${missing.join(' and ')}: ${JSON.stringify(heard)}`).toEqual([]);

  const reply = page.getByTestId('assistant-message').first();
  await reply.waitFor({ timeout: 60_000 });
  await page.waitForFunction(
    () => {
      const bytes = Number(document.querySelector('[data-testid="audio-bytes-received"]')?.textContent);
      const played = Number(document.querySelector('[data-testid="audio-played-ms"]')?.textContent);
      const text = document.querySelector('[data-testid="assistant-message"] .bubble-text')?.textContent ?? '';
      return bytes > 0 && played > 0 && text.replace('…', '').trim().length > 0;
    },
    null,
    { timeout: 60_000, polling: 250 },
  );
  const replyText = (await reply.locator('.bubble-text').innerText()).trim();
  const bytes = Number(await page.getByTestId('audio-bytes-received').innerText());
  // The turn's metrics (voice_to_voice_ms, contract) come with the reply; then let it play on, so
  // the screenshot shows the finished turn.
  const voiceToVoice = page.getByTestId('metric-voice-to-voice');
  await voiceToVoice
    .filter({ hasText: /\d+ ms/ })
    .waitFor({ timeout: 30_000 })
    .catch(async (error: Error) => {
      const shown = (await voiceToVoice.allInnerTexts()).join(' | ') || 'no metric element';
      throw new Error(
        `the voice-to-voice metric showed no time within 30 s of the reply (it shows ${JSON.stringify(shown)}): ${error.message.split('\n')[0]}`,
      );
    });
  await sleep(1500);
  const playedMs = Number(await page.getByTestId('audio-played-ms').innerText());
  const v2v = await voiceToVoice.innerText();
  const errors = await page.getByRole('alert').allInnerTexts();
  await screenshot(page, 'voice-chat-websocket');
  expect(errors, `errors shown: ${errors.join(' | ')}`).toEqual([]);
  console.log(`    heard ${JSON.stringify(heard)}; replied ${JSON.stringify(replyText.slice(0, 80))}`);
  console.log(`    reply audio: ${bytes} bytes received, ${playedMs} ms played; voice-to-voice ${v2v}`);
  await page.getByRole('button', { name: 'Disconnect' }).click();
  await page.getByRole('button', { name: 'Connect' }).waitFor({ timeout: 10_000 });
  const keptReplies = page.getByTestId('assistant-message');
  const keptTurns = page.getByTestId('transcript-user');
  expect(
    (await keptReplies.count()) > 0 && (await keptTurns.count()) > 0,
    'Disconnect took the conversation off the screen',
  ).toBe(true);
  const kept = (await keptReplies.first().locator('.bubble-text').innerText()).trim();
  expect(kept.startsWith(replyText), `the reply on screen changed at Disconnect: ${JSON.stringify(kept)}`).toBe(true);
});
