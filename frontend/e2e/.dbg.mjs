// temporary debugging script (not committed)
import { chromium } from 'playwright-core';
import { writeFileSync, readFileSync } from 'node:fs';
const base = 'http://127.0.0.1:8131';
const wavPath = process.argv[2];
const mode = process.argv[3] ?? 'default';
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox','--disable-gpu','--use-fake-ui-for-media-stream','--use-fake-device-for-media-stream',`--use-file-for-fake-audio-capture=${wavPath}%noloop`,'--autoplay-policy=no-user-gesture-required'] });
const page = await browser.newPage();
if (mode !== 'default') {
  await page.addInitScript((mode) => {
    const orig = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    const m = { raw: [false,false,false], ec: [true,false,false], ns: [false,true,false], agc: [false,false,true], ecagc: [true,false,true] }[mode];
    navigator.mediaDevices.getUserMedia = (c) => orig({ audio: { channelCount: 1, echoCancellation: m[0], noiseSuppression: m[1], autoGainControl: m[2] } });
  }, mode);
}
const frames = [];
page.on('websocket', (ws) => ws.on('framesent', (f) => { if (typeof f.payload !== 'string') frames.push(Buffer.from(f.payload)); }));
await page.goto(base + '/#voice');
await page.getByRole('button', { name: 'Connect' }).click();
const fin = page.locator('[data-testid="transcript-user"][data-final="true"]').first();
await fin.waitFor({ timeout: 60000 });
console.log(mode, 'heard:', await fin.locator('.bubble-text').innerText());
const rate = await page.evaluate(() => new AudioContext().sampleRate);
const pcm = Buffer.concat(frames);
const h = Buffer.alloc(44); h.write('RIFF',0); h.writeUInt32LE(36+pcm.length,4); h.write('WAVE',8); h.write('fmt ',12); h.writeUInt32LE(16,16); h.writeUInt16LE(1,20); h.writeUInt16LE(1,22); h.writeUInt32LE(16000,24); h.writeUInt32LE(32000,28); h.writeUInt16LE(2,32); h.writeUInt16LE(16,34); h.write('data',36); h.writeUInt32LE(pcm.length,40);
writeFileSync(`/tmp/dbg/sent-${mode}.wav`, Buffer.concat([h,pcm]));
console.log('ctx rate', rate, 'sent seconds', pcm.length/32000);
await browser.close();
