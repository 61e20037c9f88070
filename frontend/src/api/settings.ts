/**
 * Connection settings typed by the user. They live in localStorage only: the API key is never
 * read from the build environment, so it can never end up in the bundle.
 */
export interface Settings {
  /** Base URL of the API, e.g. `http://gpu-box:8000`. Empty: same origin as the page. */
  apiBaseUrl: string;
  /** Sent as `Authorization: Bearer` on REST calls and as the `apikey.<key>` subprotocol on the WebSocket. */
  apiKey: string;
}

export const SETTINGS_STORAGE_KEY = 'gemmavoice.settings';

export const DEFAULT_SETTINGS: Settings = { apiBaseUrl: '', apiKey: '' };

export function loadSettings(storage: Storage = window.localStorage): Settings {
  try {
    const raw = storage.getItem(SETTINGS_STORAGE_KEY);
    if (!raw) return { ...DEFAULT_SETTINGS };
    const parsed = JSON.parse(raw) as Partial<Settings>;
    return {
      apiBaseUrl: typeof parsed.apiBaseUrl === 'string' ? parsed.apiBaseUrl : '',
      apiKey: typeof parsed.apiKey === 'string' ? parsed.apiKey : '',
    };
  } catch {
    // Corrupt or inaccessible storage: start from the defaults rather than fail to render.
    return { ...DEFAULT_SETTINGS };
  }
}

export function saveSettings(settings: Settings, storage: Storage = window.localStorage): void {
  const normalized: Settings = {
    apiBaseUrl: normalizeBaseUrl(settings.apiBaseUrl),
    apiKey: settings.apiKey.trim(),
  };
  storage.setItem(SETTINGS_STORAGE_KEY, JSON.stringify(normalized));
}

export function normalizeBaseUrl(url: string): string {
  return url.trim().replace(/\/+$/, '');
}
