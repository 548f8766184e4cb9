// What the server put in the chat page for its scripts (the `page-data` JSON element of
// templates/chat/chat.html), parsed once for every module that reads it.

export const pageData = JSON.parse(document.getElementById("page-data").textContent);
