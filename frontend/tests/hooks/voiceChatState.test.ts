import { describe, expect, it } from 'vitest';
import type { ServerEvent } from '../../src/api/conversation';
import { initialVoiceChatState, voiceChatReducer, type VoiceChatState } from '../../src/hooks/voiceChatState';

const apply = (state: VoiceChatState, ...events: ServerEvent[]) =>
  events.reduce((s, event) => voiceChatReducer(s, { type: 'server', event }), state);

const ready = apply(initialVoiceChatState, {
  type: 'ready',
  session_id: 's1',
  input_sample_rate: 16000,
  output_sample_rate: 24000,
  vad: true,
  models_ready: true,
});

describe('voiceChatReducer', () => {
  it('updates a partial user transcript in place, even after a reply it interrupted began', () => {
    let s = apply(ready, { type: 'text', role: 'assistant', delta: 'Hel' });
    s = apply(
      s,
      { type: 'transcript', role: 'user', text: 'wait', final: false, language: 'en' },
      { type: 'interrupted', reason: 'barge_in' },
      { type: 'transcript', role: 'user', text: 'wait, stop', final: true, language: 'en' },
    );
    expect(s.items.map((i) => [i.role, i.text, i.final, i.interrupted ?? false])).toEqual([
      ['assistant', 'Hel', true, true],
      ['user', 'wait, stop', true, false],
    ]);
    expect(s.agent).toBe('thinking');
  });

  it('tells the user when a turn that would not end was cut', () => {
    const s = apply(ready, {
      type: 'turn_cut',
      reason: 'max_turn_length',
      max_seconds: 30,
      message: 'answering what was said so far',
    });
    expect(s.errors.map((e) => [e.code, e.message])).toEqual([['turn_cut', 'answering what was said so far']]);
  });

  it('starts a new assistant message for each reply', () => {
    const s = apply(
      ready,
      { type: 'text', role: 'assistant', delta: 'One' },
      { type: 'response_end', text: 'One' },
      { type: 'text', role: 'assistant', delta: 'Two' },
    );
    expect(s.items.map((i) => i.text)).toEqual(['One', 'Two']);
    expect(s.items.map((i) => i.final)).toEqual([true, false]);
  });

  it('stays speaking after response_end until playback is idle', () => {
    let s = voiceChatReducer(apply(ready, { type: 'text', role: 'assistant', delta: 'Hi' }), { type: 'audio-started' });
    s = apply(s, { type: 'response_end', text: 'Hi' });
    expect(s.agent).toBe('speaking');
    s = voiceChatReducer(s, { type: 'playback-idle' });
    expect(s.agent).toBe('listening');
  });

  it('keeps the last few errors and ignores empty transcripts', () => {
    let s = ready;
    for (let i = 0; i < 8; i++) s = apply(s, { type: 'error', code: 'e', message: `m${i}` });
    expect(s.errors.map((e) => e.message)).toEqual(['m3', 'm4', 'm5', 'm6', 'm7']);
    expect(apply(ready, { type: 'transcript', role: 'user', text: '  ', final: true, language: null }).items).toEqual([]);
  });
});
