import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { useState } from 'react';
import { describe, expect, it, vi } from 'vitest';
import { RadioGroup, type RadioOption } from '../../src/components/RadioGroup';

type Colour = 'red' | 'green' | 'blue';

const COLOURS: RadioOption<Colour>[] = [
  { value: 'red', label: 'Red' },
  { value: 'green', label: 'Green' },
  { value: 'blue', label: 'Blue' },
];

function Colours({
  options = COLOURS,
  initial = 'red',
  disabled,
  onChange,
}: {
  options?: RadioOption<Colour>[];
  initial?: Colour;
  disabled?: boolean;
  onChange?: (value: Colour) => void;
}) {
  const [value, setValue] = useState<Colour>(initial);
  return (
    <>
      <button type="button">Before</button>
      <RadioGroup
        className="segmented"
        label="Colour"
        options={options}
        value={value}
        disabled={disabled}
        onChange={(next) => {
          setValue(next);
          onChange?.(next);
        }}
      />
      <button type="button">After</button>
    </>
  );
}

const radio = (name: string) => screen.getByRole('radio', { name });

describe('RadioGroup', () => {
  it('is a labelled radiogroup whose chosen radio is checked, active and the only tab stop', () => {
    render(<Colours initial="green" />);
    expect(screen.getByRole('radiogroup', { name: 'Colour' })).toHaveClass('segmented');
    expect(radio('Green')).toHaveAttribute('aria-checked', 'true');
    expect(radio('Green')).toHaveClass('active');
    expect(radio('Green')).toHaveAttribute('tabindex', '0');
    for (const name of ['Red', 'Blue']) {
      expect(radio(name)).toHaveAttribute('aria-checked', 'false');
      expect(radio(name)).not.toHaveClass('active');
      expect(radio(name)).toHaveAttribute('tabindex', '-1');
    }
  });

  it('chooses an option on click', async () => {
    const user = userEvent.setup();
    const onChange = vi.fn();
    render(<Colours onChange={onChange} />);
    await user.click(radio('Blue'));
    expect(onChange).toHaveBeenLastCalledWith('blue');
    expect(radio('Blue')).toHaveAttribute('aria-checked', 'true');
    expect(radio('Red')).toHaveAttribute('aria-checked', 'false');
  });

  it('Tab enters at the chosen option and leaves the group', async () => {
    const user = userEvent.setup();
    render(<Colours initial="blue" />);
    await user.click(screen.getByRole('button', { name: 'Before' }));
    await user.tab();
    expect(radio('Blue')).toHaveFocus();
    await user.tab();
    expect(screen.getByRole('button', { name: 'After' })).toHaveFocus();
    await user.tab({ shift: true });
    expect(radio('Blue')).toHaveFocus();
  });

  it('moves, chooses and focuses with the arrow keys (wrapping round), Home and End', async () => {
    const user = userEvent.setup();
    render(<Colours />);
    await user.click(radio('Red'));
    const steps: [string, string][] = [
      ['{ArrowRight}', 'Green'],
      ['{ArrowDown}', 'Blue'],
      ['{ArrowDown}', 'Red'], // wraps round
      ['{ArrowLeft}', 'Blue'], // and back
      ['{ArrowUp}', 'Green'],
      ['{Home}', 'Red'],
      ['{End}', 'Blue'],
    ];
    for (const [key, name] of steps) {
      await user.keyboard(key);
      expect(radio(name)).toHaveAttribute('aria-checked', 'true');
      expect(radio(name)).toHaveAttribute('tabindex', '0');
      expect(radio(name)).toHaveFocus();
    }
    expect(screen.getAllByRole('radio', { checked: true })).toHaveLength(1);
  });

  it('ignores other keys', async () => {
    const user = userEvent.setup();
    const onChange = vi.fn();
    render(<Colours onChange={onChange} />);
    await user.click(radio('Red'));
    onChange.mockClear();
    await user.keyboard('a{PageDown}');
    expect(onChange).not.toHaveBeenCalled();
    expect(radio('Red')).toHaveFocus();
  });

  it('disabled: every option is disabled and cannot be chosen', async () => {
    const user = userEvent.setup();
    const onChange = vi.fn();
    render(<Colours disabled onChange={onChange} />);
    for (const name of ['Red', 'Green', 'Blue']) expect(radio(name)).toBeDisabled();
    await user.click(radio('Green'));
    expect(onChange).not.toHaveBeenCalled();
    expect(radio('Red')).toHaveAttribute('aria-checked', 'true');
  });

  it('skips a disabled option with the arrow keys, Home and End', async () => {
    const user = userEvent.setup();
    const options: RadioOption<Colour>[] = [
      { value: 'red', label: 'Red', disabled: true },
      { value: 'green', label: 'Green' },
      { value: 'blue', label: 'Blue' },
    ];
    render(<Colours options={options} initial="green" />);
    expect(radio('Red')).toBeDisabled();
    await user.click(radio('Green'));
    await user.keyboard('{ArrowRight}');
    expect(radio('Blue')).toHaveFocus();
    await user.keyboard('{ArrowRight}'); // wraps round past Red
    expect(radio('Green')).toHaveAttribute('aria-checked', 'true');
    expect(radio('Green')).toHaveFocus();
    await user.keyboard('{ArrowLeft}');
    expect(radio('Blue')).toHaveFocus();
    await user.keyboard('{Home}');
    expect(radio('Green')).toHaveFocus();
    expect(radio('Red')).toHaveAttribute('aria-checked', 'false');
  });

  it('as a tablist: tabs with aria-selected, ids and aria-controls', async () => {
    const user = userEvent.setup();
    const onChange = vi.fn();
    render(
      <RadioGroup
        role="tablist"
        className="tabs"
        label="Features"
        options={[
          { value: 'a', label: 'First', id: 'tab-a', controls: 'panel-a' },
          { value: 'b', label: 'Second', id: 'tab-b', controls: 'panel-b' },
        ]}
        value="a"
        onChange={onChange}
      />,
    );
    expect(screen.getByRole('tablist', { name: 'Features' })).toHaveClass('tabs');
    const first = screen.getByRole('tab', { name: 'First' });
    expect(first).toHaveAttribute('aria-selected', 'true');
    expect(first).not.toHaveAttribute('aria-checked');
    expect(first).toHaveAttribute('id', 'tab-a');
    expect(first).toHaveAttribute('aria-controls', 'panel-a');
    expect(screen.getByRole('tab', { name: 'Second' })).toHaveAttribute('aria-selected', 'false');
    expect(screen.queryByRole('radio')).toBeNull();
    await user.click(first);
    await user.keyboard('{ArrowRight}');
    expect(onChange).toHaveBeenLastCalledWith('b');
  });
});
