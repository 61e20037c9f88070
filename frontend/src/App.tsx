import { useEffect, useState } from 'react';
import { RadioGroup } from './components/RadioGroup';
import { ServerStatus } from './components/ServerStatus';
import { SettingsPanel } from './components/SettingsPanel';
import { SpeechToTextPanel } from './components/SpeechToTextPanel';
import { TextGenerationPanel } from './components/TextGenerationPanel';
import { TextToSpeechPanel } from './components/TextToSpeechPanel';
import { VoiceChatPanel } from './components/VoiceChatPanel';

export const TABS = [
  { id: 'generate', label: 'Text generation', Panel: TextGenerationPanel },
  { id: 'stt', label: 'Speech-to-text', Panel: SpeechToTextPanel },
  { id: 'tts', label: 'Text-to-speech', Panel: TextToSpeechPanel },
  { id: 'voice', label: 'Voice chat', Panel: VoiceChatPanel },
] as const;

type TabId = (typeof TABS)[number]['id'];

function tabFromHash(): TabId {
  const id = window.location.hash.replace(/^#/, '');
  return TABS.some((t) => t.id === id) ? (id as TabId) : 'voice';
}

export function App() {
  const [tab, setTab] = useState<TabId>(tabFromHash);
  const [settingsOpen, setSettingsOpen] = useState(false);

  useEffect(() => {
    const onHash = () => setTab(tabFromHash());
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  const select = (id: TabId) => {
    setTab(id);
    window.history.replaceState(null, '', `#${id}`);
  };

  return (
    <div className="app">
      <header className="app-header">
        <div className="brand">
          <img src="/favicon.svg" alt="" width={28} height={28} />
          <span>GemmaVoice</span>
        </div>
        <div className="header-right">
          <ServerStatus />
          <button
            type="button"
            className="secondary"
            aria-expanded={settingsOpen}
            onClick={() => setSettingsOpen((open) => !open)}
          >
            Settings
          </button>
        </div>
      </header>

      {settingsOpen && <SettingsPanel onClose={() => setSettingsOpen(false)} />}

      <RadioGroup
        role="tablist"
        className="tabs"
        label="Features"
        options={TABS.map(({ id, label }) => ({ value: id, label, id: `tab-${id}`, controls: `panel-${id}` }))}
        value={tab}
        onChange={select}
      />

      {/* Panels stay mounted so a voice session or a stream survives switching tabs. */}
      {TABS.map(({ id, Panel }) => (
        <div key={id} id={`panel-${id}`} role="tabpanel" aria-labelledby={`tab-${id}`} hidden={tab !== id}>
          <Panel />
        </div>
      ))}
    </div>
  );
}
