"""Telegram end to end in the user's language, history re-runs, style presets and announced changes."""

from __future__ import annotations

from pathlib import Path

from bot import i18n, messages
from storage.states import JobState

from .stack import face_photo, is_status, telegram_stack


def texts(s: object, chat: object) -> list[str]:
    return [m.text or m.caption or "" for m in s.telegram.messages(chat)]  # type: ignore[attr-defined]


async def test_a_russian_user_reads_russian_everywhere_until_choosing_another_language(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        user = s.telegram.user("Иван", language_code="ru")
        chat = s.telegram.private_chat(user)
        s.telegram.send_text(user, chat, "/start")
        welcome = await s.reply_to(chat)
        assert (welcome.text or "").startswith("Привет!") and "У вас 10 кредитов." in (welcome.text or "")

        s.telegram.send_text(user, chat, "/imagine портрет --tone noir")
        refused = await s.reply_to(chat)
        assert (refused.text or "").startswith("Неизвестная опция --tone.")

        s.telegram.send_photo(user, chat, face_photo(), caption="портрет в дождь")
        status = await s.reply_to(chat, is_status)
        assert (status.history[0]["text"] if status.history else status.text or "").startswith(("В очереди", "Рисую"))
        assert status.buttons[0]["text"] == "Отмена"
        result = await s.photo_result(chat)
        assert "портрет в дождь" in (result.caption or "")
        assert [button["text"] for button in result.buttons] == ["🎲 Заново", "✨ Вариация"]

        s.telegram.send_text(user, chat, "/quota")
        quota = (await s.reply_to(chat)).text or ""
        assert "Кредиты: 9" in quota and "Одно изображение стоит 1 кредит." in quota
        s.telegram.send_text(user, chat, "/history")
        page = await s.reply_to(chat)
        assert (page.text or "").startswith("Ваши задания (страница 1 из 1):\n1. ")
        assert [b["text"] for b in page.buttons] == ["↻ Повторить 1", "🖼 Открыть 1"]

        s.telegram.send_text(user, chat, "/language de")
        assert (await s.reply_to(chat)).text == "Ab jetzt antworte ich dir auf Deutsch."
        s.telegram.send_text(user, chat, "/cancel")
        assert (await s.reply_to(chat)).text == "Du hast nichts in der Warteschlange oder in Arbeit."
        row = await s.user_row(user)
        assert row is not None and (row.language, row.locale) == ("de", "ru")

        s.telegram.send_text(user, chat, "/language")
        menu = await s.reply_to(chat)
        assert (menu.text or "").startswith("Ich antworte dir auf Deutsch, wie du gewählt hast.")
        assert [b["callback_data"] for b in menu.buttons] == ["ln:en", "ln:ru", "ln:es", "ln:pt-BR", "ln:de", "ln:auto"]
        s.telegram.press_button(user, menu, "ln:auto")
        await s.telegram.wait_for(lambda: (menu.text or "").startswith("Я снова следую языку"), timeout=10)
        s.telegram.send_text(user, chat, "/cancel")
        assert (await s.reply_to(chat)).text == "У вас нет заданий в очереди или в работе."


async def test_a_plural_refusal_and_a_failure_in_russian(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path, credits={"new_user": 2, "daily_jobs": 2}) as s:
        user = s.telegram.user("Олег", language_code="ru")
        chat = s.telegram.private_chat(user)
        s.telegram.send_text(user, chat, "/quota")
        quota = (await s.reply_to(chat)).text or ""
        assert "Кредиты: 2" in quota and "Заданий сегодня: 0 из 2" in quota
        for n in range(2):
            s.telegram.send_photo(user, chat, face_photo(), caption=f"портрет {n}")
            await s.photo_result(chat)
        s.telegram.send_photo(user, chat, face_photo(), caption="ещё один")
        refused = await s.reply_to(chat, lambda m: "лимит" in (m.text or "") or "кредитов" in (m.text or ""))
        assert refused.text in (
            "Недостаточно кредитов: нужно 1, у вас 0. Попросите ещё у администратора.",
            "Вы достигли дневного лимита: 2 задания. Он обнуляется в полночь UTC.",
        )


async def test_history_re_run_charges_a_new_job_and_open_shows_the_result_again(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        user, chat = s.person()
        s.telegram.send_photo(user, chat, face_photo(), caption="a lighthouse --seed 7")
        await s.photo_result(chat)
        first = f"tg:{chat.id}:1"
        await s.settled(first)

        s.telegram.send_text(user, chat, "/history")
        page = await s.reply_to(chat, lambda m: "page 1 of 1" in (m.text or ""))
        assert [b["callback_data"] for b in page.buttons] == [f"rn:{first}", f"op:{first}"]

        s.telegram.press_button(user, page, f"op:{first}")
        again = await s.reply_to(chat, lambda m: m.photo is not None)
        assert "a lighthouse" in (again.caption or "")

        query = s.telegram.press_button(user, page, f"rn:{first}")
        rerun_id = f"tg:cb:{query}"
        job = await s.settled(rerun_id)
        assert job.state == JobState.SUCCEEDED and job.parent_id == first and job.kind == "rn"
        assert job.params["prompt"] == "a lighthouse" and job.params["seed"] != 7
        submits = [request.json() for request in s.fal.requests("submit")]
        assert len(submits) == 2 and submits[1]["prompt"] == "a lighthouse"
        row = await s.user_row(user)
        assert row is not None and row.credits == 8  # charged like any job

        other = s.telegram.user("Eve")
        s.telegram.press_button(other, page, f"rn:{first}", check=False)
        eve_chat = chat  # the answer is an alert for Eve, in the same chat
        answer = await s.telegram.wait_for(
            lambda: next((a for a in s.telegram.callback_answers.values() if a.text == messages.NOT_YOUR_JOB), None),
            timeout=10,
        )
        assert answer.show_alert and eve_chat.id == chat.id


async def test_a_style_preset_reaches_the_providers_request(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        user, chat = s.person()
        s.telegram.send_text(user, chat, "/styles")
        listing = (await s.reply_to(chat)).text or ""
        assert "• anime — Anime illustration with clean lines and bright colours" in listing
        s.telegram.send_photo(user, chat, face_photo(), caption="me in Paris --style anime --no hats")
        await s.photo_result(chat)
        [submit] = [request.json() for request in s.fal.requests("submit")]
        assert submit["prompt"] == (
            "anime illustration of me in Paris, cel shading, clean line art, vibrant colours, detailed eyes"
        )
        assert submit["negative_prompt"] == "hats, photo, photorealistic, 3d render"
        s.telegram.send_photo(user, chat, face_photo(), caption="me --style vaporwave")
        refused = await s.reply_to(chat, lambda m: "style" in (m.text or ""))
        assert refused.text == messages.unknown_style(
            "vaporwave", "cinematic, anime, oil-painting, pixel-art, studio-portrait"
        )


async def test_a_size_brought_into_range_is_announced_and_strict_refuses_it(tmp_path: Path) -> None:
    async with telegram_stack(tmp_path) as s:
        user, chat = s.person()
        s.fal.script.queue_ticks = 3
        s.telegram.send_photo(user, chat, face_photo(), caption="a wide beach --ar 4:1")
        status = await s.reply_to(chat, is_status)
        shown = status.history[0]["text"] if status.history else status.text or ""
        assert "Note: the size becomes 1536×384 instead of 2048×512, the range fal-flux-pulid renders." in shown
        await s.photo_result(chat)
        [submit] = [request.json() for request in s.fal.requests("submit")]
        assert submit["image_size"] == {"width": 1536, "height": 384}

        s.telegram.send_photo(user, chat, face_photo(), caption="a wide beach --ar 4:1 --strict")
        refused = await s.reply_to(chat, lambda m: "--strict" in (m.text or ""))
        assert refused.text == (
            "Not queued (--strict): no backend here renders it exactly as asked "
            "(1536×384 instead of 2048×512 on fal-flux-pulid). "
            "Without --strict it renders with that change, and the status says so."
        )
        assert len(s.fal.requests("submit")) == 1
        row = await s.user_row(user)
        assert row is not None and row.credits == 9
    assert i18n.current() == i18n.SOURCE
