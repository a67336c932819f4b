"""How a column's values are read: numbers written as text, and dates.

One place for both, used by the checks (`mmtab.data.columns`), the preprocessing and the role
decisions (`mmtab.data.roles`), so that what ``mmtab init`` calls a number or a date is exactly what
training reads as one.

- A continuous column may hold numbers written as text, as spreadsheets export them: ``"1,234"``,
  ``"$12.50"``, ``"45%"``, ``"12 kg"``: a leading currency sign, thousands separators and a trailing
  unit are dropped, and what remains must be a number (``"unknown"`` is still an error).
- A date column (``data.date_cols``) becomes three features: its days since 1970-01-01 (a number: a
  trend over time), its month and its day of the week (categories: seasons and weekly rhythms).
"""

from __future__ import annotations

import warnings

import pandas as pd

CURRENCY = r"^[$€£¥]\s*"
UNIT = r"\s*(%|[A-Za-zµ°][A-Za-zµ°/²³.]*)$"  # '%', 'kg', 'km/h', 'm²', 'sq.ft'
THOUSANDS = r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?"
DATE_PARTS = ("days", "month", "weekday")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def to_numbers(values: pd.Series) -> pd.Series:
    """float64 values: numbers as they are; text read as a number where it is one once a currency
    sign, thousands separators and a unit are dropped; anything else (and missing) NaN."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    plain = pd.to_numeric(values, errors="coerce")
    rest = values.notna() & plain.isna()
    if rest.any():
        text = values[rest].astype(str).str.strip().str.replace(CURRENCY, "", regex=True)
        text = text.str.replace(UNIT, "", regex=True)
        text = text.where(~text.str.fullmatch(THOUSANDS), text.str.replace(",", "", regex=False))
        plain[rest] = pd.to_numeric(text, errors="coerce")
    return plain.astype("float64")


def written_as_text(values: pd.Series) -> bool:
    """Whether a column holds numbers that only `to_numbers`'s reading makes numbers ("1,234", "12 kg")."""
    return not pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def to_dates(values: pd.Series) -> pd.Series:
    """datetime64 values (time-zone-free); what is not a date, and missing, is NaT."""
    if pd.api.types.is_datetime64_any_dtype(values):
        dates = values
    else:
        with warnings.catch_warnings():  # "could not infer format": each value is parsed on its own then
            warnings.simplefilter("ignore")
            dates = pd.to_datetime(values.astype("string"), errors="coerce", format="mixed")
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    return dates


def date_part_names(col: str) -> dict[str, str]:
    """The features a date column becomes, by part: ``{"days": "col.days", ...}``."""
    return {part: f"{col}.{part}" for part in DATE_PARTS}


def with_date_parts(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """`df` with each date column's parts added as columns (a copy; the user's frame is not changed)."""
    if not cols:
        return df
    parts = {}
    for col in cols:
        dates = to_dates(df[col])
        names = date_part_names(col)
        parts[names["days"]] = (dates - pd.Timestamp("1970-01-01")).dt.total_seconds() / 86400.0
        parts[names["month"]] = dates.dt.month.map(lambda m: MONTHS[int(m) - 1], na_action="ignore")
        parts[names["weekday"]] = dates.dt.weekday.map(lambda d: WEEKDAYS[int(d)], na_action="ignore")
    return df.assign(**parts)
