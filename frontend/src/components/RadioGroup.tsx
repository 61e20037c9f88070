import { useRef, type KeyboardEvent, type ReactNode } from 'react';

export interface RadioOption<T extends string> {
  value: T;
  label: ReactNode;
  disabled?: boolean;
  /** The button's id (tabs: the tabpanel's aria-labelledby points at it). */
  id?: string;
  /** Tabs only: the id of the tabpanel this tab shows. */
  controls?: string;
}

export interface RadioGroupProps<T extends string> {
  /** The group's accessible name. */
  label: string;
  options: readonly RadioOption<T>[];
  value: T;
  onChange: (value: T) => void;
  /** Disables every option. */
  disabled?: boolean;
  className?: string;
  /**
   * `radiogroup` (the default): the options are radios, `aria-checked`. `tablist`: the same control
   * as a row of tabs, `aria-selected` (and `aria-controls` for each option's panel).
   */
  role?: 'radiogroup' | 'tablist';
}

const FORWARD = new Set(['ArrowRight', 'ArrowDown']);
const BACKWARD = new Set(['ArrowLeft', 'ArrowUp']);

/**
 * A single choice among a few buttons, used as WAI-ARIA describes a radiogroup (or a tablist): only
 * the chosen option is in the Tab order (roving tabindex), so Tab leaves the group; the arrow keys
 * move to the previous or next enabled option (wrapping round), Home and End to the first and last,
 * and the option moved to is chosen and focused. The chosen button has the class `active`.
 */
export function RadioGroup<T extends string>({
  label,
  options,
  value,
  onChange,
  disabled = false,
  className,
  role = 'radiogroup',
}: RadioGroupProps<T>) {
  const buttons = useRef<(HTMLButtonElement | null)[]>([]);
  const enabled = (i: number) => !disabled && !options[i].disabled;
  const current = options.findIndex((option) => option.value === value);
  // The option Tab lands on: the chosen one, or (none chosen) the first enabled one.
  const tabStop = current !== -1 ? current : options.findIndex((_, i) => enabled(i));

  const onKeyDown = (event: KeyboardEvent<HTMLElement>) => {
    const count = options.length;
    let next: number | undefined;
    if (FORWARD.has(event.key) || BACKWARD.has(event.key)) {
      if (current === -1) return;
      const step = FORWARD.has(event.key) ? 1 : -1;
      for (let i = 1; i < count && next === undefined; i++) {
        const candidate = (current + step * i + count) % count;
        if (enabled(candidate)) next = candidate;
      }
    } else if (event.key === 'Home') {
      next = options.findIndex((_, i) => enabled(i));
    } else if (event.key === 'End') {
      next = options.findLastIndex((_, i) => enabled(i));
    } else {
      return;
    }
    event.preventDefault();
    if (next === undefined || next === -1 || next === current) return;
    onChange(options[next].value);
    buttons.current[next]?.focus();
  };

  const isTab = role === 'tablist';
  return (
    <div className={className} role={role} aria-label={label} onKeyDown={onKeyDown}>
      {options.map((option, i) => {
        const chosen = i === current;
        return (
          <button
            key={option.value}
            ref={(button) => {
              buttons.current[i] = button;
            }}
            id={option.id}
            type="button"
            role={isTab ? 'tab' : 'radio'}
            aria-checked={isTab ? undefined : chosen}
            aria-selected={isTab ? chosen : undefined}
            aria-controls={isTab ? option.controls : undefined}
            tabIndex={i === tabStop ? 0 : -1}
            className={chosen ? 'active' : ''}
            disabled={!enabled(i)}
            onClick={() => onChange(option.value)}
          >
            {option.label}
          </button>
        );
      })}
    </div>
  );
}
