"""The contact advice (docs/design.md §4): push or hold each user, with the reason, from the push effect.

The rule (`uplift.policy`): hold a user when pushes raise their churn probability by more than
`hold_above`, unless the spend pushes add is worth more than `churn_cost` per unit of churn
probability. A fatigue state from recent pushes and responses goes with every answer, and names
the likely cause when the advice is to hold.
"""

from __future__ import annotations

import numpy as np

from siyu.config import PolicyConfig

CONTACTS = ("push", "hold")
FATIGUE_STATES = ("rested", "tiring", "fatigued")


def _fill(x, value: float) -> np.ndarray:
    """x as floats with NaN replaced by `value` (np.nan_to_num costs more for the API's one-row arrays)."""
    x = np.asarray(x, dtype=float)
    return np.where(np.isnan(x), value, x)


def fatigue_state(ratio: np.ndarray, p: PolicyConfig) -> np.ndarray:
    """rested / tiring / fatigued per row from pushes per response (plus one); NaN (no pushes): rested."""
    r = _fill(ratio, 0.0)
    idx = (r >= p.fatigue["tiring"]).astype(int) + (r >= p.fatigue["fatigued"]).astype(int)
    return np.asarray(FATIGUE_STATES, dtype=object)[idx]


def hold_mask(effect_churn: np.ndarray, effect_spend: np.ndarray, p: PolicyConfig) -> np.ndarray:
    """True where the rule says hold (NaN effects: push, the brand's usual practice)."""
    c, s = np.asarray(effect_churn, dtype=float), np.asarray(effect_spend, dtype=float)
    raises = c > p.hold_above  # NaN compares False: no estimate, no hold
    worth_it = _fill(s, 0.0) > p.churn_cost * _fill(c, 0.0)
    return raises & ~worth_it


def advise(
    effect_churn: np.ndarray, effect_spend: np.ndarray, fatigue_ratio: np.ndarray, p: PolicyConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """contact, reason and fatigue state per row.

    Args:
        effect_churn: estimated P(churn | pushed) - P(churn | held) per row (NaN: no estimate).
        effect_spend: estimated spend effect per row.
        fatigue_ratio: pushes per response (plus one) over the last 30 days.
        p: the policy settings.

    Returns:
        (contact: push / hold, reason: a sentence, fatigue: rested / tiring / fatigued), object arrays.
    """
    c, s = np.asarray(effect_churn, dtype=float), np.asarray(effect_spend, dtype=float)
    hold = hold_mask(c, s, p)
    state = fatigue_state(fatigue_ratio, p)
    ratio = _fill(fatigue_ratio, 0.0)
    reasons = []
    for i in range(c.size):
        if not np.isfinite(c[i]):
            reasons.append("no push-effect estimate: the brand's usual pushes")
            continue
        pts = f"{abs(c[i]) * 100:.1f} pts"
        if hold[i]:
            why = f"pushes raise the churn risk by {pts}"
            if state[i] != "rested":
                why += f"; {state[i]}: {ratio[i]:.1f} pushes per response in the last 30 days"
        elif c[i] > p.hold_above:
            why = f"pushes raise the churn risk by {pts} but add {s[i]:.0f} in spend, which outweighs it"
        elif c[i] > 0:
            why = f"pushes raise the churn risk by only {pts}"
        else:
            why = f"pushes lower the churn risk by {pts}"
        reasons.append(why)
    contact = np.where(hold, "hold", "push").astype(object)
    return contact, np.asarray(reasons, dtype=object), state


def policy_outcomes(hold: np.ndarray, churn_pushed, churn_held, spend_pushed, spend_held) -> dict[str, float]:
    """Expected churn (mean probability) and spend (mean per user) when `hold` users are held, the rest pushed.

    Args:
        hold: bool per user.
        churn_pushed, churn_held, spend_pushed, spend_held: the oracle's outcomes per user in each arm.
    """
    h = np.asarray(hold, dtype=bool)
    return {
        "churn": float(np.mean(np.where(h, churn_held, churn_pushed))),
        "spend": float(np.mean(np.where(h, spend_held, spend_pushed))),
        "held_share": float(h.mean()),
    }
