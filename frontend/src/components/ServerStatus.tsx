import { useEffect, useState } from 'react';
import { useApiClient } from './SettingsContext';

type Status = 'checking' | 'ready' | 'loading' | 'unreachable';

const LABELS: Record<Status, string> = {
  checking: 'Checking server…',
  ready: 'Server ready',
  loading: 'Server not ready',
  unreachable: 'Server unreachable',
};

const POLL_MS = 15000;

/** A small badge from GET /health/ready. */
export function ServerStatus() {
  const client = useApiClient();
  const [status, setStatus] = useState<Status>('checking');

  useEffect(() => {
    const controller = new AbortController();
    const check = () =>
      client
        .isReady(controller.signal)
        .then((ready) => setStatus(ready ? 'ready' : 'loading'))
        .catch(() => {
          if (!controller.signal.aborted) setStatus('unreachable');
        });
    setStatus('checking');
    void check();
    const timer = window.setInterval(check, POLL_MS);
    return () => {
      controller.abort();
      window.clearInterval(timer);
    };
  }, [client]);

  return (
    <span className={`badge badge-${status}`} data-testid="server-status">
      <span className="dot" aria-hidden="true" />
      {LABELS[status]}
    </span>
  );
}
