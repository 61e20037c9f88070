import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from 'react';
import { ApiClient } from '../api/client';
import { loadSettings, saveSettings, type Settings } from '../api/settings';

interface SettingsContextValue {
  settings: Settings;
  client: ApiClient;
  updateSettings: (settings: Settings) => void;
}

const SettingsContext = createContext<SettingsContextValue | null>(null);

export function SettingsProvider({ children }: { children: ReactNode }) {
  const [settings, setSettings] = useState<Settings>(() => loadSettings());
  const updateSettings = useCallback((next: Settings) => {
    saveSettings(next);
    setSettings(loadSettings());
  }, []);
  const value = useMemo(
    () => ({ settings, client: new ApiClient(settings), updateSettings }),
    [settings, updateSettings],
  );
  return <SettingsContext.Provider value={value}>{children}</SettingsContext.Provider>;
}

export function useSettings(): SettingsContextValue {
  const value = useContext(SettingsContext);
  if (!value) throw new Error('useSettings() needs a <SettingsProvider> above it');
  return value;
}

/** The API client for the current settings. */
export function useApiClient(): ApiClient {
  return useSettings().client;
}
