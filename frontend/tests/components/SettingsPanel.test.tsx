import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { App } from '../../src/App';
import { ApiClient } from '../../src/api/client';
import { loadSettings, SETTINGS_STORAGE_KEY } from '../../src/api/settings';
import { installFakeFetch, jsonResponse } from '../doubles/fetch';
import { renderWithSettings } from '../render';

afterEach(() => {
  vi.unstubAllGlobals();
  vi.unstubAllEnvs();
});

describe('settings', () => {
  it('persists the base URL and key to localStorage and uses them for requests', async () => {
    const fetchMock = installFakeFetch({ '/health/ready': () => jsonResponse({ status: 'ok' }) });
    const user = userEvent.setup();
    renderWithSettings(<App />);

    await user.click(screen.getByRole('button', { name: 'Settings' }));
    await user.type(screen.getByLabelText('API base URL'), 'http://gpu-box:8000/');
    await user.type(screen.getByLabelText('API key'), 'my-secret-key');
    await user.click(screen.getByRole('button', { name: 'Save' }));

    expect(JSON.parse(window.localStorage.getItem(SETTINGS_STORAGE_KEY)!)).toEqual({
      apiBaseUrl: 'http://gpu-box:8000',
      apiKey: 'my-secret-key',
    });
    expect(screen.getByLabelText('API key')).toHaveAttribute('type', 'password');
    // The health badge re-checks against the new base URL.
    await vi.waitFor(() =>
      expect(fetchMock.mock.calls.some(([url]) => url === 'http://gpu-box:8000/health/ready')).toBe(true),
    );
  });

  it('reads the settings back after a reload', () => {
    window.localStorage.setItem(SETTINGS_STORAGE_KEY, JSON.stringify({ apiBaseUrl: 'https://x', apiKey: 'k' }));
    expect(loadSettings()).toEqual({ apiBaseUrl: 'https://x', apiKey: 'k' });
    window.localStorage.setItem(SETTINGS_STORAGE_KEY, '{not json');
    expect(loadSettings()).toEqual({ apiBaseUrl: '', apiKey: '' });
  });

  it('never takes the key from the build environment', () => {
    vi.stubEnv('VITE_API_KEY', 'baked-in');
    vi.stubEnv('VITE_GEMMAVOICE_API_KEY', 'baked-in');
    expect(loadSettings()).toEqual({ apiBaseUrl: '', apiKey: '' });
  });

  it('has no source file that reads the build environment', () => {
    const root = resolve(__dirname, '../../src');
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        if (statSync(path).isDirectory()) walk(path);
        else if (/\.(ts|tsx|js)$/.test(name)) files.push(path);
      }
    };
    walk(root);
    expect(files.length).toBeGreaterThan(5);
    const offenders = files.filter((f) => /import\.meta\.env|process\.env/.test(readFileSync(f, 'utf8')));
    expect(offenders).toEqual([]);
  });

  it('sends the key as a Bearer token and as api_key on the WebSocket', async () => {
    const fetchMock = installFakeFetch({
      '/v1/livekit/status': () => jsonResponse({ configured: false }),
    });
    const client = new ApiClient({ apiBaseUrl: '', apiKey: 'k1' });
    await client.liveKitStatus();
    const init = fetchMock.mock.calls[0][1] as RequestInit;
    expect((init.headers as Record<string, string>).Authorization).toBe('Bearer k1');
    expect(client.webSocketUrl('/v1/conversation/ws', 'https://app.example')).toBe(
      'wss://app.example/v1/conversation/ws?api_key=k1',
    );
    expect(
      new ApiClient({ apiBaseUrl: 'http://h:8000', apiKey: '' }).webSocketUrl('/v1/conversation/ws', 'https://x'),
    ).toBe('ws://h:8000/v1/conversation/ws');
  });
});
