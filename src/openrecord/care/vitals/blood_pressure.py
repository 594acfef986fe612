"""Home blood pressure averages, the ACC/AHA 2017 category, and the high-home-average flag.

Definitions and where they come from:

- **Category** (Whelton et al., "2017 ACC/AHA/AAPA/ABC/ACPM/AGS/APhA/ASH/ASPC/NMA/PCNA
  Guideline for the Prevention, Detection, Evaluation, and Management of High Blood
  Pressure in Adults", Hypertension 2018;71:e13, Table 6): normal SBP < 120 *and*
  DBP < 80; elevated SBP 120-129 *and* DBP < 80; stage 1 hypertension SBP 130-139
  *or* DBP 80-89; stage 2 SBP ≥ 140 *or* DBP ≥ 90. "Individuals with SBP and DBP in
  two categories should be designated to the higher BP category." Hypertensive crisis:
  the guideline's section 11.2 defines hypertensive emergency/urgency as BP > 180/120
  mm Hg; the AHA's category chart ("Understanding Blood Pressure Readings") words it
  SBP "higher than 180 and/or" DBP "higher than 120", implemented as SBP > 180 *or*
  DBP > 120. The bands are
  stated on whole mm Hg; averages are classified on the half-open intervals they imply
  (elevated is 120 ≤ SBP < 130), so 129.5 is elevated. The table is for office BP.
- **Home average** (Muntner et al., "Measurement of Blood Pressure in Humans: A
  Scientific Statement From the AHA", Hypertension 2019;73:e35; 2017 guideline
  Table 10): two readings ≥ 1 min apart each morning and evening, optimally over 7
  days (28 readings), at least 3 days (12 readings); the home BP is the mean of all of
  them. Implemented: the mean SBP and mean DBP of every reading in [start, end), with
  `meets_minimum` = at least 12 readings on at least 3 calendar days. ESH-style
  protocols discard the first day (more variable); `drop_first_day` does that.
- **High home average** (2017 guideline Table 11, office vs home equivalents: office
  120/80 ~ home 120/80, 130/80 ~ 130/80, 140/90 ~ 135/85, 160/100 ~ 145/90): a home
  mean SBP ≥ 135 *or* DBP ≥ 85 corresponds to office ≥ 140/90 (stage 2), the
  long-standing home-hypertension threshold of ESH and the pre-2017 AHA statements.
  The 2017 guideline's own hypertension threshold at home is 130/80
  (`HOME_STAGE_1_THRESHOLD`), passed as `threshold` to flag that instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = [
    "HOME_HIGH_THRESHOLD",
    "HOME_STAGE_1_THRESHOLD",
    "MINIMUM_DAYS",
    "MINIMUM_READINGS",
    "BpCategory",
    "BpReading",
    "HomeAverage",
    "bp_category",
    "home_average",
    "home_average_high",
]

HOME_HIGH_THRESHOLD = (135.0, 85.0)
HOME_STAGE_1_THRESHOLD = (130.0, 80.0)
MINIMUM_READINGS = 12
MINIMUM_DAYS = 3


@dataclass(frozen=True, slots=True)
class BpReading:
    """One blood pressure reading (panel 85354-9: SBP 8480-6, DBP 8462-4) in mm Hg."""

    time: datetime
    systolic: float
    diastolic: float


@dataclass(frozen=True, slots=True)
class HomeAverage:
    """Mean home SBP/DBP over a period and how much data it rests on."""

    systolic: float
    diastolic: float
    readings: int
    days: int
    meets_minimum: bool


class BpCategory(StrEnum):
    """ACC/AHA 2017 blood pressure categories, plus hypertensive crisis."""

    NORMAL = "normal"
    ELEVATED = "elevated"
    STAGE_1 = "stage-1-hypertension"
    STAGE_2 = "stage-2-hypertension"
    CRISIS = "hypertensive-crisis"


def bp_category(systolic: float, diastolic: float) -> BpCategory:
    """The ACC/AHA 2017 category of a reading or an average (the higher of SBP's and DBP's)."""
    if systolic > 180 or diastolic > 120:
        return BpCategory.CRISIS
    if systolic >= 140 or diastolic >= 90:
        return BpCategory.STAGE_2
    if systolic >= 130 or diastolic >= 80:
        return BpCategory.STAGE_1
    if systolic >= 120:
        return BpCategory.ELEVATED
    return BpCategory.NORMAL


def home_average(
    readings: Iterable[BpReading],
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    drop_first_day: bool = False,
) -> HomeAverage | None:
    """Mean SBP/DBP of the readings in [start, end); None when there are none.

    Days are calendar dates in each reading's own time zone (the patient's local day).
    """
    chosen = sorted(
        (
            reading
            for reading in readings
            if (start is None or reading.time >= start) and (end is None or reading.time < end)
        ),
        key=lambda reading: reading.time,
    )
    if drop_first_day and chosen:
        first_day = chosen[0].time.date()
        chosen = [reading for reading in chosen if reading.time.date() != first_day]
    if not chosen:
        return None
    count = len(chosen)
    days = len({reading.time.date() for reading in chosen})
    return HomeAverage(
        systolic=sum(reading.systolic for reading in chosen) / count,
        diastolic=sum(reading.diastolic for reading in chosen) / count,
        readings=count,
        days=days,
        meets_minimum=count >= MINIMUM_READINGS and days >= MINIMUM_DAYS,
    )


def home_average_high(
    average: HomeAverage, threshold: tuple[float, float] = HOME_HIGH_THRESHOLD
) -> bool:
    """Whether a home average reaches the threshold: SBP ≥ first *or* DBP ≥ second."""
    systolic, diastolic = threshold
    return average.systolic >= systolic or average.diastolic >= diastolic
