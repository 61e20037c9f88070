import type { KeyboardEvent } from 'react';

/**
 * Keyboard use of a tablist or a radiogroup, as WAI-ARIA describes it: the arrow keys move to the
 * previous or next item (wrapping round), Home and End to the first and last; the item moved to is
 * selected and focused. Put it on the container's onKeyDown; `values` are the items in order.
 * Only the selected item is in the Tab order (tabIndex 0, the others -1), so Tab leaves the group.
 */
export function moveWithArrowKeys<T>(
  event: KeyboardEvent<HTMLElement>,
  values: readonly T[],
  current: T,
  select: (value: T) => void,
): void {
  const index = values.indexOf(current);
  const last = values.length - 1;
  const next = {
    ArrowRight: index + 1 > last ? 0 : index + 1,
    ArrowDown: index + 1 > last ? 0 : index + 1,
    ArrowLeft: index - 1 < 0 ? last : index - 1,
    ArrowUp: index - 1 < 0 ? last : index - 1,
    Home: 0,
    End: last,
  }[event.key];
  if (next === undefined || index === -1) return;
  const items = event.currentTarget.querySelectorAll<HTMLButtonElement>('[role="tab"], [role="radio"]');
  if (items[next]?.disabled) return;
  event.preventDefault();
  select(values[next]);
  items[next]?.focus();
}
