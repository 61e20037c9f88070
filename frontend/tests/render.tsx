import { render } from '@testing-library/react';
import type { ReactElement } from 'react';
import { SettingsProvider } from '../src/components/SettingsContext';

/** Renders a component the way main.tsx does: under the settings provider. */
export function renderWithSettings(ui: ReactElement) {
  return render(<SettingsProvider>{ui}</SettingsProvider>);
}
