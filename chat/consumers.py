"""The `/ws/chat/` consumer: it checks frames, calls chat services and forwards a generation's
frames from its group to the browser. docs/protocol.md is the contract."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from chat import errors, options, queue, submission
from chat.attachments import Attachments, attachments_parse
from chat.follow import FrameFollower, Verdict
from chat.frames import (
    AcceptedFrame,
    Frame,
    broadcast_async,
    conversation_frame,
    message_group,
    user_group,
)
from chat.models import Message
from chat.options import GenerationOptions, InvalidOptions, options_parse
from chat.streams import progress_frame_read
from wizweb.redis_server import redis_connection
from wizweb.socket_session import SocketSessionEnded, socket_user_reload
from wizweb.untrusted_json import UntrustedJSONError, untrusted_json_parse

MAX_FRAME_BYTES = 256 * 1024


class FrameError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def _uuid(frame: dict[str, Any], key: str, *, required: bool = True) -> uuid.UUID | None:
    value = frame.get(key)
    if value is None and not required:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise FrameError("invalid_frame", f"{key!r} must be an id (a UUID).") from None


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.user = self.scope.get("user")
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=4401)
            return
        # What this socket was sent of each answer it follows.
        self.following: dict[str, FrameFollower] = {}
        await self.channel_layer.group_add(user_group(self.user.pk), self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return
        await self.channel_layer.group_discard(user_group(user.pk), self.channel_name)
        for message_id in getattr(self, "following", {}):
            await self.channel_layer.group_discard(message_group(message_id), self.channel_name)

    async def send_frame(self, frame: Frame | Mapping[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame))

    async def send_error(self, code: str, message: str, **about: Any) -> None:
        await self.send_frame({"type": "error", "code": code, "message": message, **about})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        client_id = None
        try:
            if text_data is None:
                raise FrameError("invalid_frame", "Frames must be JSON text, not binary.")
            if len(text_data) > MAX_FRAME_BYTES:
                raise FrameError("frame_too_large", "The frame is too large; send less text.")
            try:
                frame = untrusted_json_parse(text_data)
            except UntrustedJSONError as exc:
                raise FrameError("invalid_json", str(exc)) from None
            if not isinstance(frame, dict):
                raise FrameError("invalid_frame", "A frame must be a JSON object.")
            client_id = frame.get("client_id")
            kind = frame.get("type")
            if not isinstance(kind, str) or not kind:
                raise FrameError("invalid_frame", 'A frame needs a "type".')
            handler = getattr(self, f"on_{kind}", None)
            if handler is None:
                raise FrameError("unknown_type", f"Unknown frame type {kind!r}.")
            if kind != "ping":
                # The socket outlives its handshake: a logout, a new password, a disabled
                # account or lost staff rights since then apply from its next request.
                self.user = await socket_user_reload(self.scope, self.user.pk)
            await handler(frame)
        except SocketSessionEnded as exc:
            extra = {"client_id": client_id} if client_id is not None else {}
            await self.send_error(exc.code, str(exc), **extra)
            await self.close(code=4401)
        except FrameError as exc:
            extra = {"client_id": client_id} if client_id is not None else {}
            await self.send_error(exc.code, str(exc), **extra)
        except InvalidOptions as exc:
            extra = {"client_id": client_id} if client_id is not None else {}
            await self.send_error("invalid_options", str(exc), key=exc.key, **extra)
        except errors.ChatError as exc:
            extra = {"client_id": client_id} if client_id is not None else {}
            await self.send_error(exc.code, str(exc), **extra)

    async def on_ping(self, frame: dict[str, Any]) -> None:
        await self.send_frame({"type": "pong"})

    def _content(self, frame: dict[str, Any]) -> str:
        content = frame.get("content")
        if not isinstance(content, str) or not content.strip():
            raise FrameError("empty_prompt", "The prompt is empty; type something to send.")
        if len(content) > settings.WIZ_MAX_PROMPT_CHARS:
            raise FrameError(
                "prompt_too_long",
                f"The prompt is {len(content)} characters; the limit is "
                f"{settings.WIZ_MAX_PROMPT_CHARS}. Shorten it.",
            )
        return content

    async def _options(self, frame: dict[str, Any]) -> GenerationOptions:
        # Turning a JSON schema into a grammar can take seconds: in a thread of its own, so the
        # event loop keeps serving every other socket meanwhile. It touches no database.
        return await sync_to_async(options_parse, thread_sensitive=False)(
            frame.get("options"), max_priority=options.max_priority_for(self.user)
        )

    def _attachments(self, frame: dict[str, Any]) -> Attachments:
        """The frame's `documents` and `collections`, in shape; who may read them is the
        submission's to check, before it saves anything."""
        return attachments_parse(frame.get("documents"), frame.get("collections"))

    async def on_prompt(self, frame: dict[str, Any]) -> None:
        content = self._content(frame)
        conversation_id = _uuid(frame, "conversation", required=False)
        parent_id = _uuid(frame, "parent", required=False)
        attachments = self._attachments(frame)
        options = await self._options(frame)
        accepted = await database_sync_to_async(submission.prompt_submit)(
            user=self.user,
            conversation_id=conversation_id,
            content=content,
            options=options,
            parent_id=parent_id,
            attachments=attachments,
        )
        await self.follow_accepted(frame, accepted, new_conversation=conversation_id is None)

    async def on_regenerate(self, frame: dict[str, Any]) -> None:
        message_id = _uuid(frame, "message")
        options = await self._options(frame)
        accepted = await database_sync_to_async(submission.message_regenerate)(
            user=self.user, message_id=message_id, options=options
        )
        await self.follow_accepted(frame, accepted)

    async def on_edit(self, frame: dict[str, Any]) -> None:
        message_id = _uuid(frame, "message")
        content = self._content(frame)
        # Neither key given: the new version keeps the old one's attachments.
        given = "documents" in frame or "collections" in frame
        attachments = self._attachments(frame) if given else None
        options = await self._options(frame)
        accepted = await database_sync_to_async(submission.message_edit)(
            user=self.user,
            message_id=message_id,
            content=content,
            options=options,
            attachments=attachments,
        )
        await self.follow_accepted(frame, accepted)

    async def follow_accepted(
        self,
        frame: dict[str, Any],
        accepted: submission.Accepted,
        *,
        new_conversation: bool = False,
    ) -> None:
        """Answer `accepted`, then stream the queued answer to this socket."""
        message_id = str(accepted.message.id)
        await self.channel_layer.group_add(message_group(message_id), self.channel_name)
        self.following[message_id] = FrameFollower(message_id)
        answer: AcceptedFrame = {
            "type": "accepted",
            "client_id": frame.get("client_id"),
            "conversation": str(accepted.conversation.id),
            "user_message": str(accepted.user_message.id),
            "message": message_id,
            "queue_position": accepted.queue_position,
        }
        await self.send_frame(answer)
        if new_conversation:
            # To every page the user has open, so their sidebars list it too.
            announced = conversation_frame(accepted.conversation.id, accepted.conversation.title)
            await broadcast_async(self.channel_layer, [(user_group(self.user.pk), announced)])
        await self.catch_up(message_id)
        await self.announce_queue()

    async def announce_queue(self) -> None:
        """Tell every waiting generation its place (it shifts when one joins or leaves)."""
        frames = await database_sync_to_async(queue.queue_position_frames)()
        await broadcast_async(self.channel_layer, frames)

    async def on_subscribe(self, frame: dict[str, Any]) -> None:
        message_id = str(_uuid(frame, "message"))
        after = frame.get("after", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise FrameError("invalid_frame", '"after" must be the last seq seen (0 for all).')
        owned = await Message.objects.filter(
            pk=message_id, conversation__owner=self.user, role=Message.Role.ASSISTANT
        ).aexists()
        if not owned:
            raise FrameError("not_found", "That message does not exist or is not yours.")
        await self.channel_layer.group_add(message_group(message_id), self.channel_name)
        follower = self.following[message_id] = FrameFollower(message_id, after)
        await self.catch_up(message_id)
        queued = await database_sync_to_async(queue.queued_frame)(message_id)
        if queued is not None:
            await self.send_frame(queued)
        elif follower.last_seq == 0 and not follower.finished:
            # Its long prompt may be being read: how far, rather than silence until the text.
            progress = await sync_to_async(progress_frame_read)(redis_connection(), message_id)
            if progress is not None:
                await self.chat_frame({"frame": progress})

    async def on_abort(self, frame: dict[str, Any]) -> None:
        message_id = _uuid(frame, "message")
        assert message_id is not None
        message = await database_sync_to_async(queue.message_abort)(
            user=self.user, message_id=message_id
        )
        if message.state == Message.State.ABORTED and message.finish_reason == "aborted":
            # It never reached a worker, so nobody else will say it is done.
            done = (message_group(message_id), message.done_frame())
            await broadcast_async(self.channel_layer, [done])
            await self.announce_queue()

    async def catch_up(self, message_id: str) -> None:
        """Send what the message has beyond what this socket saw: logged chunks, then `done`.

        The socket is already in the message's group, so whatever is logged after this read
        arrives as live frames; its follower drops the ones already sent here.
        """
        follower = self.following.get(message_id)
        if follower is None:
            return
        for frame in await follower.backlog():
            await self._forward(follower, frame)

    async def chat_frame(self, event: dict[str, Any]) -> None:
        """A frame of one generation from its group (or a stored `progress`): sent once, in
        order; a chunk that comes after a gap (frames lost with a restarting Redis) sends what
        the log holds instead."""
        frame = event["frame"]
        follower = self.following.get(frame.get("message"))
        if follower is None:
            return
        if await self._forward(follower, frame) is Verdict.GAP:
            await self.catch_up(follower.message_id)

    async def _forward(self, follower: FrameFollower, frame: Mapping[str, Any]) -> Verdict:
        verdict = follower.admit(frame)
        if verdict is Verdict.SEND:
            if follower.finished:
                await self.channel_layer.group_discard(
                    message_group(follower.message_id), self.channel_name
                )
            await self.send_frame(frame)
        return verdict

    async def chat_conversation(self, event: dict[str, Any]) -> None:
        """A frame of the user's own (a conversation named, renamed or deleted): as it is."""
        await self.send_frame(event["frame"])
