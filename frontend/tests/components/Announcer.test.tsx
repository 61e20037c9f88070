import { render, screen } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { finishedSentences } from '../../src/components/Announcer';
import { ChatTranscript, type TranscriptEntry } from '../../src/components/ChatTranscript';

describe('finishedSentences', () => {
  it('keeps whole sentences only, until the text is final', () => {
    expect(finishedSentences('Hello there. How are', false)).toBe('Hello there.');
    expect(finishedSentences('It costs 3.5 euros', false)).toBe('');
    expect(finishedSentences('Really?! "Yes." And', false)).toBe('Really?! "Yes."');
    expect(finishedSentences('The end.', false)).toBe(''); // more may follow the full stop
    expect(finishedSentences('The end', true)).toBe('The end');
  });
});

describe('ChatTranscript announcements', () => {
  const reply = (text: string, final = false): TranscriptEntry[] => [
    { id: 1, role: 'user', text: 'Tell me about the sea.', final: true },
    { id: 2, role: 'assistant', text, final },
  ];

  it('announces the reply a finished sentence at a time, not at every token', () => {
    const { rerender } = render(<ChatTranscript entries={reply('The sea')} emptyText="" />);
    const announcer = screen.getByTestId('announcer');
    expect(announcer).toHaveTextContent(/^$/);
    rerender(<ChatTranscript entries={reply('The sea is wide.')} emptyText="" />);
    expect(announcer).toHaveTextContent(/^$/);
    rerender(<ChatTranscript entries={reply('The sea is wide. It is')} emptyText="" />);
    expect(announcer).toHaveTextContent(/^The sea is wide\.$/);
    rerender(<ChatTranscript entries={reply('The sea is wide. It is deep.')} emptyText="" />);
    expect(announcer).toHaveTextContent(/^The sea is wide\.$/);
    rerender(<ChatTranscript entries={reply('The sea is wide. It is deep.', true)} emptyText="" />);
    expect(announcer).toHaveTextContent(/^It is deep\.$/);
    // The list itself is no live region: it would be read again at each token.
    expect(screen.getByRole('list', { name: 'Conversation' })).not.toHaveAttribute('aria-live');
  });

  it('starts over for the next reply', () => {
    const { rerender } = render(<ChatTranscript entries={reply('First reply.', true)} emptyText="" />);
    const next: TranscriptEntry[] = [...reply('First reply.', true), { id: 3, role: 'assistant', text: 'Second one.', final: true }];
    rerender(<ChatTranscript entries={next} emptyText="" />);
    expect(screen.getByTestId('announcer')).toHaveTextContent(/^Second one\.$/);
  });
});
