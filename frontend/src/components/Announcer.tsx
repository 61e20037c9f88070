import { useEffect, useRef, useState } from 'react';

/**
 * The part of a streaming text that is whole sentences: all of it once it is final, else up to the
 * last sentence end that more text has followed (so "3.5" or "Mr." at the very end waits).
 */
export function finishedSentences(text: string, final: boolean): string {
  if (final) return text;
  const match = /^[\s\S]*[.!?…]["'”’)\]]*(?=\s)/.exec(text);
  return match ? match[0] : '';
}

/**
 * A visually hidden live region that tells assistive technology a streaming reply one finished
 * sentence at a time, instead of re-reading it at every token. `source` identifies the reply: a new
 * one starts from its beginning.
 */
export function Announcer({ source, text, final }: { source: string | number | null; text: string; final: boolean }) {
  const [said, setSaid] = useState({ text: '', count: 0 });
  const told = useRef<{ source: string | number | null; length: number }>({ source: null, length: 0 });

  useEffect(() => {
    if (source === null) return;
    const done = finishedSentences(text, final);
    const from = told.current.source === source ? told.current.length : 0;
    if (done.length <= from) return;
    told.current = { source, length: done.length };
    const fresh = done.slice(from).trim();
    if (fresh) setSaid((previous) => ({ text: fresh, count: previous.count + 1 }));
  }, [source, text, final]);

  return (
    <div className="visually-hidden" role="status" aria-live="polite" aria-atomic="true" data-testid="announcer">
      {/* A new node each time, so the same sentence said twice is announced twice. */}
      {said.text && <span key={said.count}>{said.text}</span>}
    </div>
  );
}
