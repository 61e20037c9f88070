import { useEffect, useRef } from 'react';
import { Announcer } from './Announcer';

export interface TranscriptEntry {
  id: string | number;
  role: 'user' | 'assistant';
  text: string;
  final: boolean;
  interrupted?: boolean;
}

/**
 * The conversation so far; follows the newest entry while it streams. The list itself is not a live
 * region (it would be re-read at every token): the assistant's sentences are announced as each ends.
 */
export function ChatTranscript({ entries, emptyText }: { entries: TranscriptEntry[]; emptyText: string }) {
  const listRef = useRef<HTMLOListElement>(null);

  useEffect(() => {
    const list = listRef.current;
    if (list) list.scrollTop = list.scrollHeight;
  }, [entries]);

  const reply = entries.findLast((entry) => entry.role === 'assistant');

  return (
    <>
    <Announcer source={reply?.id ?? null} text={reply?.text ?? ''} final={reply?.final ?? false} />
    <ol className="transcript" ref={listRef} aria-label="Conversation">
      {entries.length === 0 && <li className="transcript-empty muted">{emptyText}</li>}
      {entries.map((entry) => (
        <li
          key={entry.id}
          className={`bubble ${entry.role}${entry.final ? '' : ' partial'}`}
          data-testid={entry.role === 'user' ? 'transcript-user' : 'assistant-message'}
          data-final={entry.final}
        >
          <span className="bubble-role">{entry.role === 'user' ? 'You' : 'Assistant'}</span>
          <span className="bubble-text">{entry.text || '…'}</span>
          {entry.interrupted && <span className="bubble-note">interrupted</span>}
        </li>
      ))}
    </ol>
    </>
  );
}
